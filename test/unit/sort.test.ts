import { runLua } from "../harness/lua";

/** base/sort.ts: the sliced sort gives the same order as a plain sort and checks the budget as it goes. */
describe("slicedOrder", () => {
  test.each([0, 1, 2, 511, 512, 513, 5000, 20000])("%i keys: ascending, a permutation, `between` called along the way", (n) => {
    // keys made here (ground truth computed in TS from the same list)
    const keys: number[] = [];
    let seed = 12345 + n;
    for (let i = 0; i < n; i++) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      keys.push(94000000000000 + (seed % 100000) * 16); // address-like, with ties
    }
    const r = runLua(`
      local S = require("memdiag.base.sort")
      local keys = { ${keys.join(",")} }
      local calls = 0
      -- a TS array is a 1-based Lua table; the order holds 0-based (TS) indices
      local order = S.slicedOrder(keys, function() calls = calls + 1 end)
      return { order = arr(order), calls = calls }`);
    const order: number[] = r.order;
    expect(order.length).toBe(n);
    expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i));
    const sorted = order.map((i) => keys[i]);
    expect(sorted).toEqual([...keys].sort((a, b) => a - b));
    if (n > 512) expect(r.calls).toBeGreaterThanOrEqual(Math.ceil(n / 512));
  });
});
