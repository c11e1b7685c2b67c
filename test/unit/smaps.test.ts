import * as fs from "fs";
import * as path from "path";
import { runLua, luaStr } from "../harness/lua";

/**
 * layers/system/smaps.ts, the fixed-buffer smaps reader, in the luajit CLI. Ground truth is the text
 * itself, parsed here in TypeScript: every record's start, end and Rss: value.
 */
const fixture = fs.readFileSync(path.join(__dirname, "..", "fixtures", "regions", "nginx-worker.smaps"), "utf8");

function truthOf(text: string): [number, number, number][] {
  const out: [number, number, number][] = [];
  let start = -1;
  let end = -1;
  for (const line of text.split("\n")) {
    const h = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (h) [start, end] = [parseInt(h[1], 16), parseInt(h[2], 16)];
    const r = /^Rss:\s+(\d+) kB/.exec(line);
    if (r) out.push([start, end, Number(r[1]) * 1024]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

/** Lua: scan `text` through a source handing out at most `step` bytes a call; rows sorted by start */
const scanLua = (text: string, step: number) => `
  local S = require("memdiag.layers.system.smaps")
  local src = S.textSource(${luaStr(text)})
  local ticks = 0
  local got = S.scanSmaps(function(dst, max) return src(dst, math.min(max, ${step})) end, function() ticks = ticks + 1 end)
  if type(got) == "string" then return { err = got } end
  local rows = {}
  for start, rss in pairs(got.rss) do rows[#rows + 1] = { start, got.ends[start], rss } end
  table.sort(rows, function(a, b) return a[1] < b[1] end)
  return { rows = arr(rows), ticks = ticks }`;

describe("smaps reader (fixed buffer)", () => {
  const exact = (x: number[]) => x[0] < 2 ** 53 && x[1] < 2 ** 53;

  test("a real worker's smaps: every record's start, end and Rss, whatever the read sizes", () => {
    const truth = truthOf(fixture).filter(exact);
    expect(truth.length).toBeGreaterThan(50);
    for (const step of [16384, 4096, 977, 7]) {
      const r = runLua(scanLua(fixture, step));
      expect(r.err).toBeUndefined();
      expect(r.rows.filter(exact)).toEqual(truth);
      expect(r.ticks).toBeGreaterThan(0); // the caller gets control between reads
    }
  });

  test("text many times the buffer: records are parsed as they complete and the rest moved down", () => {
    // 6,000 records (~2.4 MB), the buffer is 64 KB
    const recs: string[] = [];
    for (let i = 0; i < 6000; i++) {
      const s = 0x7f0000000000 + i * 0x10000;
      recs.push(
        `${s.toString(16)}-${(s + 0x1000).toString(16)} rw-p 00000000 00:00 0 \n` +
          `Size:                  4 kB\nKernelPageSize:        4 kB\nMMUPageSize:           4 kB\n` +
          `Rss:                 ${i % 97} kB\nPss:                   0 kB\n` +
          "Private_Dirty:         0 kB\n".repeat(8) +
          `VmFlags: rd wr mr mw me ac sd \n`,
      );
    }
    const text = recs.join("");
    const r = runLua(scanLua(text, 16384));
    expect(r.err).toBeUndefined();
    expect(r.rows).toEqual(truthOf(text));
  });

  test("text of other shapes gets a reason, not a misread", () => {
    const cases: [string, RegExp][] = [
      ["555500000000-555500001000 r--p 00000000 00:00 0\nSize: 4 kB\n", /no VmFlags/],
      ["555500000000-555500001000 r--p 00000000 00:00 0\nSize: 4 kB\nVmFlags: rd\n", /without Rss/],
      ["zz5500000000-555500001000 r--p 00000000 00:00 0\nRss: 4 kB\nVmFlags: rd\n", /header unparsable/],
      ["555500000000-555500001000 r--p 00000000 00:00 0\nRss: kB\nVmFlags: rd\n", /without a number/],
      [`555500000000-555500001000 r--p 00000000 00:00 0\n${"Rss: 4 kB\n".repeat(8000)}VmFlags: rd\n`, /larger than the buffer/],
    ];
    for (const [text, why] of cases) {
      const r = runLua(scanLua(text, 16384));
      expect(r.err).toMatch(why);
    }
  });

  test("the live read of /proc/self/smaps agrees with the text read right after it", () => {
    const r = runLua(`
      local S = require("memdiag.layers.system.smaps")
      collectgarbage("collect"); collectgarbage("stop") -- nothing freed or unmapped by the GC
      -- a first text read grows LuaJIT's read buffer, so the read after ours maps nothing new
      -- before the kernel has produced its text (its result string is mapped only afterwards)
      local warm = io.open("/proc/self/smaps"):read("*a")
      local got = S.readSelfSmaps()
      local text = io.open("/proc/self/smaps"):read("*a")
      collectgarbage("restart")
      if type(got) == "string" then return { err = got } end
      local rows = {}
      for start, rss in pairs(got.rss) do rows[#rows + 1] = { start, got.ends[start], rss } end
      table.sort(rows, function(a, b) return a[1] < b[1] end)
      return { rows = arr(rows), text = text, warm = #warm }`);
    expect(r.err).toBeUndefined();
    const truth = truthOf(r.text).filter(exact);
    const rows = r.rows.filter(exact);
    expect(rows.length).toBeGreaterThan(10);
    expect(rows.map((x: number[]) => [x[0], x[1]])).toEqual(truth.map((x) => [x[0], x[1]]));
    // Rss as the kernel said a moment later: pages the reads themselves touched may differ
    const differ = rows.filter((x: number[], i: number) => x[2] !== truth[i][2]);
    expect(differ.length).toBeLessThanOrEqual(3);
    differ.forEach((x: number[]) => {
      const t = truth.find((y) => y[0] === x[0])!;
      expect(Math.abs(x[2] - t[2])).toBeLessThanOrEqual(256 * 1024);
    });
  });
});
