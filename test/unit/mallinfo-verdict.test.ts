import { runLua } from "../harness/lua";

/** layers/glibc/mallinfo.ts: when one mallinfo2 call's cost and free-chunk count end its use (pure rule, in the compiled Lua). */
describe("mallinfoVerdict", () => {
  const verdict = (ms: number, chunks: number, prevOver: number) =>
    runLua(`
      local M = require("memdiag.layers.glibc.mallinfo")
      local v = M.mallinfoVerdict(${ms}, ${chunks}, ${prevOver})
      return { over = v.over, giveUp = v.giveUp }`);

  test("cheap: keeps calling and forgets an earlier slow call", () => {
    expect(verdict(0.05, 8000, 0)).toEqual({ over: 0, giveUp: false });
    expect(verdict(0.29, 8000, 1)).toEqual({ over: 0, giveUp: false });
  });
  test("slow with few free chunks is a preemption or a VM stall, not the walk: never counted", () => {
    expect(verdict(1.7, 12, 0)).toEqual({ over: 0, giveUp: false });
    expect(verdict(25, 4999, 1)).toEqual({ over: 0, giveUp: false });
  });
  test("slow once with many free chunks: keeps calling, counts it", () => {
    expect(verdict(0.5, 8000, 0)).toEqual({ over: 1, giveUp: false });
  });
  test("slow twice in a row with many free chunks: gives up", () => {
    expect(verdict(0.5, 8000, 1)).toEqual({ over: 2, giveUp: true });
  });
  test("at the free-chunk limit the next call would cost milliseconds: gives up whatever this one cost", () => {
    const r = runLua(`
      local M = require("memdiag.layers.glibc.mallinfo")
      local max = M.MALLINFO_MAX_CHUNKS
      local below, at = M.mallinfoVerdict(0.01, max - 1, 0), M.mallinfoVerdict(0.01, max, 0)
      return { max = max, below = below.giveUp, at = at.giveUp }`);
    // 1.4 ms measured at 30,000 free chunks, 0.26 ms at 20,000 (README): the limit keeps the last call under a slice
    expect(r.max).toBeLessThanOrEqual(20000);
    expect(r.below).toBe(false);
    expect(r.at).toBe(true);
  });
});
