import * as fs from "fs";
import * as path from "path";
import { ROOT } from "../../scripts/config";
import { luaStr, runLua } from "../harness/lua";

/** layout/validate.ts completeness checks and the range helpers, in plain LuaJIT (no nginx). */
const LAYOUT_FILE = path.join(ROOT, "layouts", fs.readdirSync(path.join(ROOT, "layouts")).find((f) => f.endsWith(".json"))!);
const LAYOUT = fs.readFileSync(LAYOUT_FILE, "utf8");

function check(mutate: string): string | null {
  return runLua(`
    local V = require("memdiag.layout.validate")
    local L = require("memdiag.util.json").decode(${luaStr(LAYOUT)})
    ${mutate}
    return V.checkComplete(L) or NULL
  `);
}

describe("checkComplete: a layout lacking anything the agent reads is refused at load", () => {
  test("the committed layout is complete", () => {
    expect(check("")).toBeNull();
  });
  test.each([
    ["a missing struct", "L.structs.ngx_pool_t = nil", /lacks struct ngx_pool_t/],
    ["a missing member", 'L.structs.ngx_connection_t.fields.pool = nil', /ngx_connection_t\.pool/],
    ["an offset beyond the struct", 'L.structs.ngx_cycle_t.fields.connections = 4096', /ngx_cycle_t\.connections/],
    ["a fractional offset", 'L.structs.ngx_pool_t.fields.max = 32.5', /ngx_pool_t\.max/],
    ["a missing constant", "L.constants.NGX_CYCLE_POOL_SIZE = nil", /NGX_CYCLE_POOL_SIZE/],
    ["a 32-bit layout", "L.constants.sizeof_ptr = 4", /64-bit/],
    ["no id", "L.id = nil", /lacks id/],
  ])("%s", (_name, mutate, reason) => {
    expect(check(mutate)).toMatch(reason);
  });
});

describe("readable ranges", () => {
  // two adjacent readable mappings ([heap] shown as two lines), a gap, then an unreadable one
  const MAPS = [
    "100000-200000 rw-p 00000000 00:00 0 [heap]",
    "200000-300000 rw-p 00000000 00:00 0 [heap]",
    "400000-500000 rw-p 00000000 00:00 0",
    "500000-600000 ---p 00000000 00:00 0",
  ].join("\n");
  const PRE = `
    local V = require("memdiag.layout.validate")
    local m = require("memdiag.safe.maps").Maps:parse(${luaStr(MAPS)})
  `;

  test("rangeReadable spans adjacent readable mappings, not gaps or unreadable ones", () => {
    const r = runLua(`${PRE}
      return {
        V.rangeReadable(m, 0x1ff000, 0x2000),
        V.rangeReadable(m, 0x100000, 0x200000),
        V.rangeReadable(m, 0x2ff000, 0x2000),
        V.rangeReadable(m, 0x4ff000, 0x2000),
        V.rangeReadable(m, 0x300000, 16),
      }`);
    expect(r).toEqual([true, true, false, false, false]);
  });

  test("Maps.readable's last-hit cache never widens a check beyond the mapping that was hit", () => {
    const r = runLua(`${PRE}
      local out = {}
      out[1] = m:readable(0x100010, 16)        -- hit: caches [0x100000, 0x200000)
      out[2] = m:readable(0x1ffff8, 16)        -- crosses into the next [heap] line: one region (not through the cache)
      out[3] = m:readable(0x150000, 0x10000)   -- inside the cached mapping
      out[4] = m:readable(0x4ffff0, 16)        -- hit in another mapping
      out[5] = m:readable(0x500000, 8)         -- unreadable right after it
      out[6] = m:readable(0x0fffff, 1)         -- just below the first mapping
      out[7] = m:readable(0x100000 + 0x100000, 1) -- second heap line, by itself
      return out`);
    expect(r).toEqual([true, true, true, true, false, false, true]);
  });
});
