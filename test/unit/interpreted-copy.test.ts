import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { runLua } from "../harness/lua";

/**
 * base/nojit.ts interpretedCopy, in the luajit CLI, on modules the test writes: the copy's
 * functions never start a trace (counted with jit.attach) while the module's own do, the copy
 * calls the dependencies it was given, and package.loaded is left as it was, also when the
 * module fails to load. layers/pools/rooted-jit.ts loads layers/pools/rooted.ts and nginx/pool-walk.ts this way.
 */
describe("interpretedCopy", () => {
  let dir = "";
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-copy-"));
    fs.mkdirSync(path.join(dir, "cp"));
    // a hot loop (LuaJIT traces loops after 56 iterations) calling into a dependency
    fs.writeFileSync(
      path.join(dir, "cp", "hot.lua"),
      `local dep = require("cp.dep")
local M = {}
function M.sum(n) local s = 0 for i = 1, n do s = s + dep.f(i) end return s end
M.depName = dep.name
return M
`,
    );
    fs.writeFileSync(path.join(dir, "cp", "dep.lua"), `return { name = "real", f = function(i) return i end }\n`);
    fs.writeFileSync(path.join(dir, "cp", "broken.lua"), `local dep = require("cp.dep")\nerror("broken at load")\n`);
    fs.writeFileSync(path.join(dir, "cp", "syntax.lua"), `return {\n`);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const prelude = () => `
    package.path = ${JSON.stringify(dir + "/?.lua;")} .. package.path
    local nj = require("memdiag.base.nojit")
    local traces = {}
    local function counting(what, tr, func)
      if what == "start" then traces[func] = (traces[func] or 0) + 1 end
    end
  `;

  test("the copy runs interpreted; the module it copies is still compiled", () => {
    const out = runLua(`${prelude()}
      local hot = require("cp.hot")
      local copy, err = nj.interpretedCopy("cp.hot", {})
      jit.attach(counting, "trace")
      local a = hot.sum(10000)
      local b = copy.sum(10000)
      jit.attach(counting)
      return { err = err or NULL, distinct = copy ~= hot and copy.sum ~= hot.sum, a = a, b = b,
               realTraces = traces[hot.sum] or 0, copyTraces = traces[copy.sum] or 0,
               sameLoaded = package.loaded["cp.hot"] == hot }
    `);
    expect(out.err).toBeNull();
    expect(out.distinct).toBe(true);
    expect(out.b).toBe(out.a);
    expect(out.a).toBe(50005000);
    // ground truth that traces are counted at all: the required module's loop is traced
    expect(out.realTraces).toBeGreaterThan(0);
    expect(out.copyTraces).toBe(0);
    expect(out.sameLoaded).toBe(true);
  });

  test("the copy calls the dependencies it was given; package.loaded is restored", () => {
    const out = runLua(`${prelude()}
      local real = require("cp.dep")
      local stand = { name = "stand-in", f = function(i) return 2 * i end }
      local copy, err = nj.interpretedCopy("cp.hot", { ["cp.dep"] = stand })
      return { err = err or NULL, depName = copy.depName, sum = copy.sum(10),
               restored = package.loaded["cp.dep"] == real, hotLoaded = package.loaded["cp.hot"] == nil }
    `);
    expect(out).toEqual({ err: null, depName: "stand-in", sum: 110, restored: true, hotLoaded: true });
  });

  test("a module that is missing, does not parse or fails while loading: a reason, package.loaded untouched", () => {
    const out = runLua(`${prelude()}
      local real = require("cp.dep")
      local stand = { name = "stand-in", f = function(i) return i end }
      local r = {}
      for _, name in ipairs({ "cp.missing", "cp.syntax", "cp.broken" }) do
        local copy, err = nj.interpretedCopy(name, { ["cp.dep"] = stand })
        r[#r + 1] = { name = name, copy = copy == nil and NULL or "loaded", err = err or NULL,
                      restored = package.loaded["cp.dep"] == real }
      end
      return arr(r)
    `);
    expect(out.map((r: any) => [r.name, r.copy, r.restored])).toEqual([
      ["cp.missing", null, true],
      ["cp.syntax", null, true],
      ["cp.broken", null, true],
    ]);
    expect(out[0].err).toMatch(/cp\.missing not found on package\.path/);
    expect(out[1].err).toMatch(/^cp\.syntax: .*syntax\.lua/);
    expect(out[2].err).toMatch(/^cp\.broken: .*broken at load/);
  });
});
