import { runLua } from "../harness/lua";

/**
 * base/slice.ts: a slice yields at its deadline (check) or, before a step without checks
 * inside, when the step would not fit in what is left of the slice (reserve / due(aheadMs)).
 * ngx.sleep is stubbed (counts yields); time is the real monotonic clock, advanced by busy
 * waiting. Every assertion holds whatever the machine's speed: "no yield" cases leave tens of
 * milliseconds of margin, "yield" cases are past the deadline by construction.
 */
describe("Budget.reserve", () => {
  test("yields only when the step would not fit in the slice; a yield starts a new slice", () => {
    const r = runLua(`
      local sleeps = 0
      ngx = { sleep = function() sleeps = sleeps + 1 end }
      local lualib = require("lualib_bundle")
      local Budget = require("memdiag.base.slice").Budget
      local clock = require("memdiag.base.clock")
      local function waitUntil(b0, ms) while clock.monoMs() - b0 < ms do end end
      local b0 = clock.monoMs()
      local b = lualib.__TS__New(Budget, 200, true)
      local out = {}
      -- at the start: a 1 ms step fits, a step as long as the slice does not
      out.fits_at_start = b:reserve(1)
      out.due_small = b:due(1)
      out.due_whole = b:due(200)
      -- 120 ms in: 10 ms still fits, 100 ms does not
      waitUntil(b0, 120)
      out.fits_10 = b:reserve(10)
      out.sleeps_before = sleeps
      out.yield_100 = b:reserve(100)
      out.sleeps_after = sleeps
      out.slices = b.slices
      out.epoch = b.epoch
      -- the new slice has its whole length ahead: a plain check does not yield
      out.check_after = b:check()
      -- a budget that cannot yield (a request handler without ngx.sleep) never does
      local nb = lualib.__TS__New(Budget, 1, false)
      waitUntil(clock.monoMs(), 5)
      out.no_yield_reserve = nb:reserve(100)
      out.no_yield_check = nb:check()
      out.sleeps_end = sleeps
      return out`);
    expect(r.fits_at_start).toBe(false);
    expect(r.due_small).toBe(false);
    expect(r.due_whole).toBe(true);
    expect(r.fits_10).toBe(false);
    expect(r.sleeps_before).toBe(0);
    expect(r.yield_100).toBe(true);
    expect(r.sleeps_after).toBe(1);
    expect(r.slices).toBe(2);
    expect(r.epoch).toBe(1);
    expect(r.check_after).toBe(false);
    expect(r.no_yield_reserve).toBe(false);
    expect(r.no_yield_check).toBe(false);
    expect(r.sleeps_end).toBe(1);
  });
});
