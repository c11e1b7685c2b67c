import * as fs from "fs";
import * as path from "path";
import { spawnSync } from "child_process";
import { LUA_DIR, LUAJIT, luaStr, runLua } from "../harness/lua";

/**
 * layers/system/classify.ts classification (compiled Lua) on synthetic smaps text + synthetic memory
 * (a word table; every read must have been checked readable first), and on a real worker's smaps.
 */
const K = 1024;
const M = 1024 * K;
const HEAP_MAX = 64 * M;
const hex = (n: number) => n.toString(16);

interface Spec {
  start: number;
  size: number;
  perms?: string;
  inode?: number;
  path?: string;
  rss?: number;
}

function smaps(specs: Spec[]): string {
  return specs
    .map((s) => {
      const inode = s.inode ?? 0;
      const head = `${hex(s.start)}-${hex(s.start + s.size)} ${s.perms ?? "rw-p"} 00000000 ${inode ? "fe:00" : "00:00"} ${inode}`;
      const rssKb = Math.floor((s.rss ?? 0) / K);
      return [
        s.path ? `${head.padEnd(73)}${s.path}` : `${head} `,
        `Size:           ${s.size / K} kB`,
        "KernelPageSize:        4 kB",
        "MMUPageSize:           4 kB",
        `Rss:            ${rssKb} kB`,
        `Pss:            ${rssKb} kB`,
        "Anonymous:             0 kB",
        "THPeligible:    0",
        "VmFlags: rd wr mr mw me ac ",
      ].join("\n");
    })
    .join("\n") + "\n";
}

function words(w: Map<number, number>): string {
  return "{" + [...w].map(([a, v]) => `[${a}]=${v}`).join(",") + "}";
}

const PRE = `
local R = require("memdiag.layers.system.classify")
local Maps = require("memdiag.safe.maps").Maps
function run(text, words, opts)
  opts = opts or {}
  local list, rss = R.parseSmaps(text)
  local maps = Maps:fromList(list)
  local unchecked = 0
  local mem = {
    readable = function(a, l) return maps:readable(a, l) end,
    u64 = function(a) if not maps:readable(a, 8) then unchecked = unchecked + 1 end return words[a] or 0 end,
  }
  if opts.noRss then rss = nil end
  local res = R.classify({ list = maps.list, rss = rss, mem = mem, zones = opts.zones or {}, known = opts.known or {},
    topN = opts.topN or 12, rssTotal = opts.rssTotal or 0, resident = opts.resident })
  local by = {}
  local dump = {}
  if opts.dump then
    local pieces = R.classifyPieces({ list = maps.list, mem = mem, zones = opts.zones or {}, known = opts.known or {}, topN = 12, rssTotal = 0 })
    for i, m in ipairs(maps.list) do for _, p in ipairs(pieces[i]) do dump[#dump + 1] = string.format("%x-%x %s %s | %x-%x %s %s", m.start, m["end"], m.perms, m.path, p.start, p["end"], p.cls, tostring(p.name)) end end
  end
  for k, v in pairs(res.byClass) do by[k] = { bytes = v.bytes, rss = v.rss } end
  return { regions = arr(res.regions), explained = res.explained, unchecked = unchecked, by = by, dump = arr(dump) }
end
`;

interface Result {
  regions: { class: string; name?: string; bytes: number; rss_bytes?: number; mappings: number }[];
  explained: number;
  unchecked: number;
  by: Record<string, { bytes: number; rss: number }>;
}

function classify(specs: Spec[], w: Map<number, number>, opts = "{}"): Result {
  return runLua<Result>(`${PRE} return run(${luaStr(smaps(specs))}, ${words(w)}, ${opts})`);
}

describe("region classification (synthetic address space)", () => {
  // ---- a worker-like address space, every class present, with known expected bytes
  const specs: Spec[] = [];
  const w = new Map<number, number>();
  const expect_: Record<string, number> = { glibc_heap: 0, luajit: 0, shm_zone: 0, code: 0, file: 0, stack: 0, other_anon: 0 };
  const add = (cls: string, s: Spec) => {
    specs.push(s);
    expect_[cls] += s.size;
  };
  // nginx ELF + its .bss continuation
  const NG = 0x555500000000;
  add("code", { start: NG, size: 16 * K, perms: "r--p", inode: 100, path: "/usr/sbin/nginx" });
  add("code", { start: NG + 16 * K, size: 64 * K, perms: "r-xp", inode: 100, path: "/usr/sbin/nginx" });
  add("code", { start: NG + 80 * K, size: 16 * K, perms: "r--p", inode: 100, path: "/usr/sbin/nginx" });
  add("code", { start: NG + 96 * K, size: 8 * K, perms: "rw-p", inode: 100, path: "/usr/sbin/nginx" });
  add("code", { start: NG + 104 * K, size: 32 * K, perms: "rw-p" });
  // brk heap as two consecutive lines
  const HP = 0x555600000000;
  add("glibc_heap", { start: HP, size: 1 * M, path: "[heap]" });
  add("glibc_heap", { start: HP + M, size: 512 * K, path: "[heap]" });
  // glibc mmapped chunk (prev_size 0, size|IS_MMAPPED)
  const A = 0x7f0001000000;
  add("glibc_heap", { start: A, size: 0x41000 });
  w.set(A, 0).set(A + 8, 0x41000 + 2);
  // memalign'ed mmapped chunk: header at +lead, prev_size = lead
  const B = 0x7f0002000000;
  add("glibc_heap", { start: B, size: 0x10000 });
  w.set(B, 0xff0).set(B + 0xff0 + 8, 0x10000 - 0xff0 + 2);
  // one kernel mapping holding: glibc chunk | LuaJIT direct chunk | LuaJIT segment (known) | unknown
  const C = 0x7f0003000000;
  specs.push({ start: C, size: 0x101000 + 0x21000 + 0x20000 + 0x3000 });
  expect_.glibc_heap += 0x101000;
  expect_.luajit += 0x21000 + 0x20000;
  expect_.other_anon += 0x3000;
  w.set(C, 0).set(C + 8, 0x101000 + 2);
  const D1 = C + 0x101000;
  w.set(D1, 1).set(D1 + 8, 0x21000 - 32 + 2).set(D1 + 0x21000 - 32 + 8, 11);
  const SEG = D1 + 0x21000;
  const known = `{ { start = ${SEG}, ["end"] = ${SEG + 0x20000}, cls = "luajit" } }`;
  // look-alikes that must not count: PREV_INUSE set, size larger than the mapping, direct chunk without fencepost
  const E1 = 0x7f0004000000 + 0x100000; // not 64 MB aligned
  add("other_anon", { start: E1, size: 0x20000 });
  w.set(E1, 0).set(E1 + 8, 0x20000 + 3);
  const E2 = E1 + 0x100000;
  add("other_anon", { start: E2, size: 0x20000 });
  w.set(E2, 0).set(E2 + 8, 0x40000 + 2);
  const E3 = E2 + 0x100000;
  add("other_anon", { start: E3, size: 0x21000 });
  w.set(E3, 1).set(E3 + 8, 0x21000 - 32 + 2);
  // a thread arena: 64 MB aligned heap_info, rw part then PROT_NONE reservation
  const H = 0x7f0008000000;
  add("glibc_heap", { start: H, size: 132 * K });
  add("glibc_heap", { start: H + 132 * K, size: HEAP_MAX - 132 * K, perms: "---p" });
  w.set(H, H + 48).set(H + 8, 0).set(H + 16, 132 * K).set(H + 24, 132 * K);
  // a thread stack: guard page + stack
  const T = 0x7f0010000000;
  add("stack", { start: T, size: 4 * K, perms: "---p" });
  add("stack", { start: T + 4 * K, size: 8 * M });
  // shared zones
  const Z = 0x7f0020000000;
  add("shm_zone", { start: Z, size: 1 * M, perms: "rw-s", inode: 1733, path: "/dev/zero (deleted)" });
  add("shm_zone", { start: Z + 2 * M, size: 4 * K, perms: "rw-s", inode: 1735, path: "/dev/zero (deleted)" });
  // file, library (deleted), kernel specials, main stack
  add("file", { start: 0x7f0030000000, size: 2 * M, perms: "r--p", inode: 300, path: "/usr/lib/locale/locale-archive" });
  add("code", { start: 0x7f0040000000, size: 8 * K, perms: "r--p", inode: 400, path: "/usr/lib/x86_64-linux-gnu/libfoo.so.1 (deleted)" });
  add("code", { start: 0x7f0040002000, size: 16 * K, perms: "r-xp", inode: 400, path: "/usr/lib/x86_64-linux-gnu/libfoo.so.1 (deleted)" });
  add("code", { start: 0x7ffc00000000, size: 16 * K, perms: "r--p", path: "[vvar]" });
  add("code", { start: 0x7ffc00004000, size: 8 * K, perms: "r-xp", path: "[vdso]" });
  add("stack", { start: 0x7ffd00000000, size: 132 * K, path: "[stack]" });
  specs.sort((a, b) => a.start - b.start);
  const zones = `{ { name = "cache", size_bytes = ${1 * M}, addr = ${Z} } }`;

  test("every byte lands in the expected class; no unchecked read", () => {
    const r = classify(specs, w, `{ known = ${known}, zones = ${zones} }`);
    expect(r.unchecked).toBe(0);
    for (const c of Object.keys(expect_)) expect([c, r.by[c].bytes]).toEqual([c, expect_[c]]);
    const total = specs.reduce((s, x) => s + x.size, 0);
    expect(r.regions.reduce((s, x) => s + x.bytes, 0)).toBe(total);
  });

  test("named entries: code by basename (deleted suffix dropped, .bss joined), shm by zone name, fixed classes always present", () => {
    const r = classify(specs, w, `{ known = ${known}, zones = ${zones} }`);
    const named = (c: string) => Object.fromEntries(r.regions.filter((x) => x.class === c).map((x) => [x.name, x.bytes]));
    expect(named("code")).toEqual({ nginx: 136 * K, "libfoo.so.1": 24 * K, "[vvar]": 16 * K, "[vdso]": 8 * K });
    expect(named("shm_zone")).toEqual({ cache: 1 * M, "(unnamed)": 4 * K });
    expect(r.regions.slice(0, 5).map((x) => x.class)).toEqual(["glibc_heap", "luajit", "file", "stack", "other_anon"]);
  });

  test("without zones every shared anonymous mapping is (unnamed) shm", () => {
    const r = classify(specs, w, `{ known = ${known} }`);
    const shm = r.regions.filter((x) => x.class === "shm_zone");
    expect(shm).toEqual([expect.objectContaining({ name: "(unnamed)", bytes: 1 * M + 4 * K, mappings: 2 })]);
  });

  test("without LuaJIT segments the segment bytes are other_anon, direct chunks still luajit", () => {
    const r = classify(specs, w, `{ zones = ${zones} }`);
    expect(r.by.luajit.bytes).toBe(0x21000);
    expect(r.by.other_anon.bytes).toBe(expect_.other_anon + 0x20000);
  });

  test("a thread stack or .bss that crosses a 64 MB boundary (no arena there) keeps its class", () => {
    const G = 0x7f0013f00000; // 1 MB below a 64 MB boundary
    const s2: Spec[] = [
      { start: G, size: 4 * K, perms: "---p" },
      { start: G + 4 * K, size: 8 * M },
    ];
    const r = classify(s2, new Map());
    expect(r.by.stack.bytes).toBe(8 * M + 4 * K);
    expect(r.by.other_anon.bytes).toBe(0);
  });

  test("unreadable memory is never read and stays other_anon", () => {
    const X = 0x7f0050000000;
    const s2: Spec[] = [{ start: X, size: 0x41000, perms: "-w-p" }];
    const w2 = new Map<number, number>([[X, 0], [X + 8, 0x41000 + 2]]);
    const r = classify(s2, w2);
    expect(r.unchecked).toBe(0);
    expect(r.by.other_anon.bytes).toBe(0x41000);
  });
});

describe("rss attribution and explained_ratio", () => {
  const X = 0x7f0060000000;
  // one mapping: glibc chunk (64 KB) + unknown (64 KB); 100 KB resident
  const specs: Spec[] = [
    { start: 0x555500000000, size: 64 * K, perms: "r-xp", inode: 5, path: "/usr/sbin/nginx", rss: 64 * K },
    { start: X, size: 128 * K, rss: 100 * K },
  ];
  const w = new Map<number, number>([[X, 0], [X + 8, 64 * K + 2]]);

  test("rss sums equal the smaps Rss lines; split by resident pages when known", () => {
    // mincore stand-in: the glibc chunk fully resident, the rest 36 KB
    const resident = `function(a, l) if a == ${X} then return ${64 * K} else return ${36 * K} end end`;
    const r = classify(specs, w, `{ resident = ${resident}, rssTotal = ${200 * K} }`);
    expect(r.by.glibc_heap.rss).toBe(64 * K);
    expect(r.by.other_anon.rss).toBe(36 * K);
    expect(r.regions.reduce((s, x) => s + (x.rss_bytes ?? 0), 0)).toBe(164 * K);
    expect(r.explained).toBeCloseTo((164 - 36) / 200, 10);
  });

  test("without residency: by size, whole pages, never above a piece's size, total exact", () => {
    const r = classify(specs, w, `{ rssTotal = ${164 * K} }`);
    expect(r.by.glibc_heap.rss + r.by.other_anon.rss).toBe(100 * K);
    expect(r.by.glibc_heap.rss % 4096).toBe(0);
    expect(r.by.glibc_heap.rss).toBeLessThanOrEqual(64 * K);
    expect(r.by.other_anon.rss).toBeLessThanOrEqual(64 * K);
  });

  test("no smaps rss: regions carry no rss_bytes and the ratio is 0", () => {
    const r = classify(specs, w, `{ noRss = true, rssTotal = ${164 * K} }`);
    expect(r.regions.every((x) => x.rss_bytes === undefined)).toBe(true);
    expect(r.explained).toBe(0);
  });

  test("top N per name for code, the rest folded into (others) with sums kept", () => {
    const libs: Spec[] = [];
    for (let i = 0; i < 20; i++) {
      libs.push({ start: 0x7f0070000000 + i * M, size: 8 * K, perms: "r-xp", inode: 1000 + i, path: `/usr/lib/lib${i}.so`, rss: (i + 1) * 4 * K });
    }
    const r = classify(libs, new Map(), `{ topN = 5 }`);
    const code = r.regions.filter((x) => x.class === "code");
    expect(code.map((x) => x.name)).toEqual(["lib19.so", "lib18.so", "lib17.so", "lib16.so", "lib15.so", "(others)"]);
    expect(code[5].mappings).toBe(15);
    expect(code.reduce((s, x) => s + x.bytes, 0)).toBe(20 * 8 * K);
    expect(code.reduce((s, x) => s + (x.rss_bytes ?? 0), 0)).toBe(libs.reduce((s, x) => s + x.rss!, 0));
  });
});

describe("parseSmaps on a real worker's smaps", () => {
  const text = fs.readFileSync(path.join(__dirname, "..", "fixtures", "regions", "nginx-worker.smaps"), "utf8");
  test("one entry per record; Rss equals the Rss: line of its record", () => {
    const truth: [number, number][] = [];
    let cur = -1;
    for (const line of text.split("\n")) {
      const h = /^([0-9a-f]+)-[0-9a-f]+ /.exec(line);
      if (h) cur = parseInt(h[1], 16);
      const r = /^Rss:\s+(\d+) kB/.exec(line);
      if (r) truth.push([cur, Number(r[1]) * 1024]);
    }
    const r = runLua(`local R = require("memdiag.layers.system.classify")
      local list, rss = R.parseSmaps(${luaStr(text)})
      local out = {}
      for i, m in ipairs(list) do out[i] = { m.start, rss[m.start], m.path } end
      return arr(out)`);
    const exact = (x: [number, number]) => x[0] < 2 ** 53;
    expect(r.filter(exact).map((x: any[]) => [x[0], x[1]])).toEqual(truth.filter(exact));
    expect(r.length).toBe(truth.length);
  });

  test("text of another shape is refused (undefined), not misread", () => {
    const r = runLua(`local R = require("memdiag.layers.system.classify")
      local a = R.parseSmaps("555500000000-555500001000 r--p 00000000 00:00 0\\nSize: 4 kB\\n")
      return { refused = a == nil }`);
    expect(r.refused).toBe(true);
  });
});

describe("live: the luajit CLI classifies its own address space", () => {
  test("LuaJIT allocator found and validated; an 8 MB string is luajit, a 64 MB malloc is glibc_heap; bytes add up to maps", () => {
    const r = runLua(`
      local ffi = require("ffi")
      ffi.cdef("void *malloc(size_t); void *memset(void *, int, size_t);")
      local R = require("memdiag.layers.system.classify")
      local A = require("memdiag.layers.luajit.alloc")
      local Maps = require("memdiag.safe.maps").Maps
      local big = string.rep("x", 8 * 1024 * 1024)
      local blk = ffi.C.malloc(64 * 1024 * 1024); ffi.C.memset(blk, 1, 64 * 1024 * 1024)
      local t = {}
      collectgarbage("collect"); collectgarbage("stop")   -- no munmap by the GC from here on
      local text = io.open("/proc/self/smaps"):read("*a")
      local list, rss = R.parseSmaps(text)
      local maps = Maps:fromList(list)
      -- the agent's reader: the kernel copies each header (the smaps text above may be older than
      -- a segment LuaJIT mapped while it was parsed)
      local mem = require("memdiag.safe.probe").checkedMem(function() return maps end)
      local lj = A.locateLuajit(mem, maps.list)
      local known = {}
      for i, x in ipairs(lj.ranges) do known[i] = { start = x.start, ["end"] = x["end"], cls = "luajit" } end
      local res = R.classify({ list = maps.list, rss = rss, mem = mem, zones = {}, known = known, topN = 12, rssTotal = 1 })
      local pieces = R.classifyPieces({ list = maps.list, mem = mem, zones = {}, known = known, topN = 12, rssTotal = 1 })
      local function classOf(addr)
        for i, m in ipairs(maps.list) do
          for _, p in ipairs(pieces[i]) do if addr >= p.start and addr < p["end"] then return p.cls end end
        end
      end
      local strAddr = tonumber(ffi.cast("uintptr_t", ffi.cast("const char *", big)))
      local tblAddr = tonumber(string.match(tostring(t), "0x(%x+)"), 16)
      local blkAddr = tonumber(ffi.cast("uintptr_t", blk))
      local sizes = 0
      for _, m in ipairs(maps.list) do sizes = sizes + (m["end"] - m.start) end
      local sum = 0
      for _, g in ipairs(res.regions) do sum = sum + g.bytes end
      return { method = lj.method, err = lj.error or NULL, str = classOf(strAddr), tbl = classOf(tblAddr), blk = classOf(blkAddr + 32 * 1024 * 1024),
               sizes = sizes, sum = sum, lj = res.byClass.luajit.bytes, glibc = res.byClass.glibc_heap.bytes }`);
    expect(r.err).toBeNull();
    expect(r.method).toBe("lj_alloc");
    expect(r.str).toBe("luajit");
    expect(r.tbl).toBe("luajit");
    expect(r.blk).toBe("glibc_heap");
    expect(r.lj).toBeGreaterThanOrEqual(8 * M);
    expect(r.glibc).toBeGreaterThanOrEqual(64 * M);
    expect(r.sum).toBe(r.sizes);
  });
});

/**
 * A mapping unmapped after the maps were read (what a LuaJIT GC sweep or another thread's
 * free does between two reads): three glibc-mmapped-chunk lookalikes, adjacent (one kernel
 * mapping), the middle one unmapped after the maps read. The classifier's reader must
 * survive it; a reader that trusts the maps (the old one, kept here as the control) dies.
 */
describe("live: memory unmapped between the maps read and the header reads", () => {
  const chunk = (reader: string) => `
    package.path = ${JSON.stringify(LUA_DIR + "/?.lua;")} .. package.path
    local ffi = require("ffi")
    pcall(ffi.cdef, "void *mmap(void *, size_t, int, int, int, long); int munmap(void *, size_t);")
    local R = require("memdiag.layers.system.classify")
    local Maps = require("memdiag.safe.maps").Maps
    local S = 16 * 4096
    local p = ffi.cast("char *", ffi.C.mmap(nil, 3 * S, 3, 0x22, -1, 0))
    local base = tonumber(ffi.cast("uintptr_t", p))
    for i = 0, 2 do ffi.cast("uint64_t *", p + i * S)[1] = S + 2 end  -- size | IS_MMAPPED
    local maps = Maps:self()
    assert(ffi.C.munmap(p + S, S) == 0)
    local mem = ${reader}
    local m
    for _, x in ipairs(maps.list) do if x.start <= base and base < x["end"] then m = x end end
    local pieces = R.classifyPieces({ list = { m }, mem = mem, zones = {}, known = {}, topN = 12, rssTotal = 1 })
    local out = {}
    for _, q in ipairs(pieces[1]) do out[#out + 1] = string.format("%d:%d:%s", q.start - base, q["end"] - q.start, q.cls) end
    io.write(table.concat(out, " "))`;
  const run = (reader: string) => spawnSync(LUAJIT, ["-"], { input: chunk(reader), encoding: "utf8" });

  test("the checked reader classifies what is left and does not fault", () => {
    const r = run(`require("memdiag.safe.probe").checkedMem(function() return maps end)`);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const S = 16 * 4096;
    // the first chunk is recognised; from the hole on (the kernel may have merged more anonymous
    // memory after ours into the mapping) nothing is read as a chunk
    const pieces = r.stdout.split(" ");
    expect(pieces[0]).toBe(`0:${S}:glibc_heap`);
    expect(pieces[1]).toMatch(new RegExp(`^${S}:\\d+:other_anon$`));
    expect(pieces).toHaveLength(2);
  });

  test("control: a reader that trusts the maps faults on the same input", () => {
    const r = run(`{ readable = function(a, l) return maps:readable(a, l) end, u64 = require("memdiag.safe.mem").rdU64 }`);
    expect(r.signal).toBe("SIGSEGV");
  });
});
