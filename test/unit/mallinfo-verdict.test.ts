import { runLua } from "../harness/lua";

/** glibc/mallinfo.ts: when one mallinfo2 call's cost ends its use (pure rule, in the compiled Lua). */
describe("mallinfoVerdict", () => {
  const verdict = (ms: number, prevOver: number) =>
    runLua(`
      local M = require("memdiag.glibc.mallinfo")
      local v = M.mallinfoVerdict(${ms}, ${prevOver}, 0.3)
      return { over = v.over, giveUp = v.giveUp }`);

  test("under the limit: keeps calling and forgets an earlier slow call", () => {
    expect(verdict(0.05, 0)).toEqual({ over: 0, giveUp: false });
    expect(verdict(0.29, 1)).toEqual({ over: 0, giveUp: false });
  });
  test("over the limit once (a preemption can do that): keeps calling, counts it", () => {
    expect(verdict(0.5, 0)).toEqual({ over: 1, giveUp: false });
  });
  test("over the limit twice in a row: gives up", () => {
    expect(verdict(0.5, 1)).toEqual({ over: 2, giveUp: true });
  });
  test("over four times the limit once: gives up at once", () => {
    expect(verdict(1.3, 0)).toEqual({ over: 1, giveUp: true });
  });
});
