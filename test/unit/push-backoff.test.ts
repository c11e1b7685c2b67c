import { runLua } from "../harness/lua";

describe("push backoff", () => {
  test("exponential, capped, jittered within [d/2, d)", () => {
    const r = runLua(`
      local b = require("memdiag.push.backoff")
      local lo, hi = {}, {}
      for a = 0, 10 do
        lo[#lo + 1] = b.backoffDelay(a, 0.5, 30, 2, 0)
        hi[#hi + 1] = b.backoffDelay(a, 0.5, 30, 2, 0.999999)
      end
      return { lo = arr(lo), hi = arr(hi) }`);
    const expected = [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30, 30];
    expected.forEach((d, i) => {
      expect(r.lo[i]).toBeCloseTo(d / 2, 6);
      expect(r.hi[i]).toBeCloseTo(d, 4);
      expect(r.hi[i]).toBeLessThan(d + 1e-9);
    });
  });

  test("Backoff grows per attempt, resets, and spreads workers apart", () => {
    const r = runLua(`
      local L = require("lualib_bundle")
      local B = require("memdiag.push.backoff").Backoff
      math.randomseed(42)
      local b = L.__TS__New(B, 0.5, 30, 2)
      local seq = {}
      for i = 1, 8 do seq[#seq + 1] = b:next() end
      local attempts = b.attempts
      b:reset()
      local afterReset = b:next()
      -- 100 workers failing at once: their 6th delays must not coincide
      local sixth = {}
      for w = 1, 100 do
        local x = L.__TS__New(B, 0.5, 30, 2)
        for i = 1, 5 do x:next() end
        sixth[#sixth + 1] = x:next()
      end
      return { seq = arr(seq), attempts = attempts, afterReset = afterReset, sixth = arr(sixth) }`);
    expect(r.attempts).toBe(8);
    for (let i = 0; i < 8; i++) {
      const d = Math.min(30, 0.5 * 2 ** i);
      expect(r.seq[i]).toBeGreaterThanOrEqual(d / 2);
      expect(r.seq[i]).toBeLessThan(d);
    }
    expect(r.afterReset).toBeLessThan(0.5);
    const distinct = new Set(r.sixth.map((x: number) => x.toFixed(3)));
    expect(distinct.size).toBeGreaterThan(90);
    expect(Math.min(...r.sixth)).toBeGreaterThanOrEqual(8);
    expect(Math.max(...r.sixth)).toBeLessThan(16);
  });
});

describe("push backoff jitter source", () => {
  test("seededRand: in [0,1), differs between seeds (workers), uniform enough", () => {
    const r = runLua(`
      local b = require("memdiag.push.backoff")
      local a, c = b.seededRand(1001 * 7919), b.seededRand(1002 * 7919)
      local xs, ys = {}, {}
      for i = 1, 2000 do xs[#xs + 1] = a(); ys[#ys + 1] = c() end
      return { xs = arr(xs), ys = arr(ys) }`);
    const xs: number[] = r.xs;
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.05);
    const same = xs.filter((x, i) => Math.abs(x - r.ys[i]) < 1e-9).length;
    expect(same).toBeLessThan(5);
  });
});
