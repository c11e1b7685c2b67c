import * as fs from "fs";
import * as path from "path";
import { luaStr, runLua } from "../harness/lua";

/** safe/maps.ts (compiled Lua) on /proc/<pid>/maps text captured from a real nginx worker. */
const FIX = path.join(__dirname, "..", "fixtures", "regions");
const MAPS = fs.readFileSync(path.join(FIX, "nginx-worker.maps"), "utf8");

interface Line {
  start: number;
  end: number;
  perms: string;
  path: string;
}
// independent parse (TS) of the same text: the ground truth for the Lua parser
const lines: Line[] = MAPS.trim()
  .split("\n")
  .map((l) => {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) [0-9a-f]+ \S+ \d+\s*(.*)$/.exec(l)!;
    return { start: parseInt(m[1], 16), end: parseInt(m[2], 16), perms: m[3], path: m[4] };
  });

const PRE = `
local Maps = require("memdiag.safe.maps").Maps
local m = Maps:parse(${luaStr(MAPS)})
`;

describe("Maps.parse on a real worker's maps", () => {
  test("every line parsed, fields exact, consecutive [heap] lines and deleted files kept", () => {
    const r = runLua(`${PRE}
      local out = {}
      for i, x in ipairs(m.list) do out[i] = { start = x.start, ["end"] = x["end"], perms = x.perms, path = x.path, readable = x.readable } end
      return { n = m.n, list = arr(out) }`);
    expect(r.n).toBe(lines.length);
    // [vsyscall] sits above 2^53: neither a double nor the JSON round trip keep its digits
    const exact = (l: { start: number }) => l.start < 2 ** 53;
    expect(r.list.filter(exact).map((x: any) => [x.start, x.end, x.perms, x.path])).toEqual(lines.filter(exact).map((l) => [l.start, l.end, l.perms, l.path]));
    expect(r.list[r.list.length - 1].path).toBe("[vsyscall]");
    const heaps = r.list.filter((x: any) => x.path === "[heap]");
    expect(heaps.length).toBe(2);
    expect(heaps[0].end).toBe(heaps[1].start); // consecutive
    expect(r.list.filter((x: any) => x.path === "/dev/zero (deleted)").length).toBe(3);
  });

  test("readable flag: r perms only, never [vvar]/[vvar_vclock]/[vsyscall]; /dev/zero zones are readable", () => {
    const r = runLua(`${PRE}
      local out = {}
      for i, x in ipairs(m.list) do out[i] = { path = x.path, perms = x.perms, readable = x.readable } end
      return arr(out)`);
    for (const x of r) {
      const special = ["[vvar]", "[vvar_vclock]", "[vsyscall]"].includes(x.path);
      expect([x.path, x.readable]).toEqual([x.path, x.perms[0] === "r" && !special]);
    }
  });

  test("Maps.fromList gives the same table as parse", () => {
    const r = runLua(`${PRE}
      local raw = {}
      for i, x in ipairs(m.list) do raw[i] = { start = x.start, ["end"] = x["end"], perms = x.perms, offset = x.offset, inode = x.inode, path = x.path } end
      local f = Maps:fromList(raw)
      local same = f.n == m.n
      for i = 1, m.n do
        local a, b = m.list[i], f.list[i]
        if a.start ~= b.start or a["end"] ~= b["end"] or a.readable ~= b.readable then same = false end
      end
      return { same = same }`);
    expect(r.same).toBe(true);
  });
});

describe("find / readable / readableEnd edge cases", () => {
  const heap = lines.find((l) => l.path === "[heap]")!;
  const heapIdx = lines.indexOf(heap);
  const vvar = lines.find((l) => l.path === "[vvar]")!;
  const noRead = lines.find((l) => l.perms[0] !== "r" && l.path !== "[vsyscall]");
  // a gap: the end of a mapping that is not the start of the next one
  const gapAt = lines.findIndex((l, i) => i + 1 < lines.length && l.end < lines[i + 1].start);
  const gap = lines[gapAt];

  test("boundaries: start is inside, end is outside", () => {
    const r = runLua(`${PRE}
      local h = ${heap.start}
      return { first = m:find(h), last = m:find(${heap.end - 1}), after = m:find(${heap.end}),
               gap = m:find(${gap.end}), gapmid = m:find(${gap.end + 4096}),
               below = m:find(${lines[0].start - 1}), zero = m:find(0), top = m:find(${lines[lines.length - 1].end}) }`);
    expect(r.first).toBe(heapIdx);
    expect(r.last).toBe(heapIdx);
    expect(r.after).toBe(heapIdx + 1); // the second [heap] line starts there
    expect(r.gap).toBe(-1);
    expect(r.gapmid).toBe(lines[gapAt + 1].start > gap.end + 4096 ? -1 : gapAt + 1);
    expect(r.below).toBe(-1);
    expect(r.zero).toBe(-1);
    expect(r.top).toBe(-1);
  });

  test("readable(): inside, crossing the end (into an adjacent mapping: only between [heap] lines), gaps, vvar, no-read perms, low and NaN addresses", () => {
    const h2 = lines[heapIdx + 1];
    // two adjacent readable mappings that are not both [heap] (a library's segments)
    const adj = lines.findIndex((l, i) => i + 1 < lines.length && l.end === lines[i + 1].start && l.perms[0] === "r" && lines[i + 1].perms[0] === "r" && l.path !== "[heap]");
    const a = lines[adj];
    const r = runLua(`${PRE}
      return {
        inside = m:readable(${heap.start}, 16),
        lastByte = m:readable(${heap.end - 8}, 8),
        crossing = m:readable(${heap.end - 8}, 16),
        crossingRun = m:readable(${h2.end - 8}, 16),
        intoNext = m:readable(${h2.start - 4}, 8),
        intoNextLib = m:readable(${a.end - 4}, 8),
        gap = m:readable(${gap.end}, 8),
        vvar = m:readable(${vvar.start}, 8),
        noread = ${noRead ? `m:readable(${noRead.start}, 8)` : "false"},
        low = m:readable(8, 8),
        nan = m:readable(0/0, 8),
        endInside = m:readableEnd(${heap.start + 100}),
        endGap = m:readableEnd(${gap.end}),
        endVvar = m:readableEnd(${vvar.start}),
      }`);
    expect(r.inside).toBe(true);
    expect(r.lastByte).toBe(true);
    expect(r.crossing).toBe(true); // into the second [heap] line
    expect(r.crossingRun).toBe(false); // past the last one
    // the brk heap's consecutive [heap] lines are one region; other mappings are checked one by one
    expect(r.intoNext).toBe(true);
    expect(r.intoNextLib).toBe(false);
    expect(r.gap).toBe(false);
    expect(r.vvar).toBe(false);
    expect(r.noread).toBe(false);
    expect(r.low).toBe(false);
    expect(r.nan).toBe(false);
    expect(r.endInside).toBe(h2.end);
    expect(r.endGap).toBe(0);
    expect(r.endVvar).toBe(0);
  });

  test("overlapping or unsorted input lines are dropped, the search stays valid", () => {
    const text = ["1000-3000 r--p 00000000 00:00 0", "2000-4000 r--p 00000000 00:00 0", "5000-6000 rw-p 00000000 00:00 0 [heap]"].join("\n");
    const r = runLua(`local m = require("memdiag.safe.maps").Maps:parse(${luaStr(text)})
      return { n = m.n, a = m:find(0x2500), b = m:find(0x3500), c = m:find(0x5000) }`);
    expect(r).toEqual({ n: 2, a: 0, b: -1, c: 1 });
  });
});
