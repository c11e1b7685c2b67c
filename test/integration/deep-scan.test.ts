/**
 * Deep scan (issue 3) against a real nginx: glibc size classes, heap-wide pool
 * discovery, owner attribution, fault tolerance. Ground truth comes from what the
 * test locations allocate through FFI (sizes checked with malloc_usable_size).
 * One worker, so that the test locations and ?deep=1 run in the same process.
 */
import { INFLATE_LOCATION } from "../harness/deep";
import { Nginx, httpGet } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";

/** Test-only Lua: pools and chunks made through FFI, kept in module-level tables. */
const LUA_SETUP = `
local ffi = require "ffi"
pcall(ffi.cdef, [[
  void *ngx_create_pool(size_t size, void *log);
  void *ngx_palloc(void *pool, size_t size);
  void *malloc(size_t size);
  void free(void *p);
  size_t malloc_usable_size(void *p);
  extern void *ngx_cycle;
]])
local C = ffi.C
local M = {}
M.keep = M.keep or {}
local u32 = ffi.cast("const uint32_t *", 0)
local function rd64(a) return u32[a / 4] + u32[a / 4 + 1] * 4294967296 end
M.rd64 = rd64
function M.cycle_log()
  return ffi.cast("void **", C.ngx_cycle)[2]
end
-- usable size without handing malloc_usable_size a pointer cdata kept anywhere
local usable = ffi.cast("size_t (*)(uint64_t)", C.malloc_usable_size)
function M.usable(a) return tonumber(usable(a)) end
-- large allocations of a pool, read from its large list (plain numbers only)
function M.larges(p)
  local out = {}
  local l = rd64(p + 56)
  local n = 0
  while l ~= 0 and n < 10000 do
    local a = rd64(l + 8)
    if a ~= 0 then out[#out + 1] = a end
    l = rd64(l)
    n = n + 1
  end
  return out
end
return M
`;

const LOCATIONS = `
${INFLATE_LOCATION}
    location = /t/trace {
      content_by_lua_block { require("memdiag.deep.scan").setTrace(true) ngx.say('{}') }
    }
    location = /t/pool {
      content_by_lua_block {
        local ffi = require "ffi"
        local T = package.loaded.memdiag_test or loadstring(ngx.var.lua_setup)()
        package.loaded.memdiag_test = T
        local C = ffi.C
        local args = ngx.req.get_uri_args()
        local size = tonumber(args.size)
        local nlarge = tonumber(args.large or 0)
        local lsize = tonumber(args.large_size or 0)
        local addr, larges
        if args.mode == "keep" then
          -- the pointer lives in a Lua table: LuaJIT memory holds it
          local p = C.ngx_create_pool(size, T.cycle_log())
          for i = 1, nlarge do C.ngx_palloc(p, lsize) end
          T.keep[#T.keep + 1] = p
          addr = tonumber(ffi.cast("uintptr_t", p))
        else
          -- "forgotten": the pointer never becomes a Lua value (only its low 32 bits, as a number)
          local create = ffi.cast("uint32_t (*)(size_t, void *)", C.ngx_create_pool)
          local palloc = ffi.cast("uint32_t (*)(uint64_t, size_t)", C.ngx_palloc)
          local lo = create(size, T.cycle_log())
          -- small pools come from the brk heap: its high 32 bits complete the address
          local f = io.open("/proc/self/maps")
          local maps = f:read("*a")
          f:close()
          for s, e in maps:gmatch("(%x+)%-(%x+) [^\\n]*%[heap%]") do
            local hs, he = tonumber(s, 16), tonumber(e, 16)
            local hi = math.floor(hs / 4294967296)
            local cand = hi * 4294967296 + lo
            if cand >= hs and cand < he then addr = cand end
          end
          for i = 1, nlarge do palloc(addr, lsize) end
        end
        larges = T.larges(addr)
        local lbytes = 0
        for _, a in ipairs(larges) do lbytes = lbytes + T.usable(a) end
        local la = {}
        for i, a in ipairs(larges) do la[i] = string.format('"0x%x"', a) end
        ngx.say(string.format('{"pid":%d,"addr":"0x%x","large_blocks":%d,"large_bytes":%d,"larges":[%s]}', ngx.worker.pid(), addr, #larges, lbytes, table.concat(la, ",")))
      }
    }
    location = /t/malloc {
      content_by_lua_block {
        local ffi = require "ffi"
        local T = package.loaded.memdiag_test or loadstring(ngx.var.lua_setup)()
        package.loaded.memdiag_test = T
        local n = tonumber(ngx.var.arg_n)
        local size = tonumber(ngx.var.arg_size)
        T.chunks = T.chunks or {}
        local sizes = {}
        for i = 1, n do
          local p = ffi.C.malloc(size)
          ffi.fill(p, 64, 0)
          T.chunks[#T.chunks + 1] = p
          sizes[#sizes + 1] = tonumber(ffi.C.malloc_usable_size(p))
        end
        ngx.say(string.format('{"pid":%d,"usable":%d}', ngx.worker.pid(), sizes[1] or 0))
      }
    }
    location = /t/fake {
      content_by_lua_block {
        -- chunks crafted to look like pool heads (header invariants hold) with broken lists
        local ffi = require "ffi"
        local T = package.loaded.memdiag_test or loadstring(ngx.var.lua_setup)()
        package.loaded.memdiag_test = T
        T.fakes = T.fakes or {}
        local kind = ngx.var.arg_kind
        local size = 2000
        local p = ffi.C.malloc(size)
        local a = tonumber(ffi.cast("uintptr_t", p))
        local w = ffi.cast("uint64_t *", p)
        ffi.fill(p, size, 0)
        w[0] = a + 80                -- d.last
        w[1] = a + size              -- d.end
        w[2] = 0                     -- d.next
        w[4] = size - 80             -- max
        w[5] = a                     -- current
        w[9] = ffi.cast("uint64_t", T.cycle_log())  -- log
        if kind == "large" then
          w[7] = 0x10                -- large: an unmapped address
        elseif kind == "largecycle" then
          -- large list a -> b -> a, entries inside the block
          w[10] = a + 96; w[11] = 0  -- entry at +80: next = +96, alloc NULL
          w[12] = a + 80; w[13] = 0  -- entry at +96: next = +80
          w[7] = a + 80
        elseif kind == "blockcycle" then
          -- a second block that links back to itself through a third
          local q = ffi.C.malloc(size)
          local r = ffi.C.malloc(size)
          local qa = tonumber(ffi.cast("uintptr_t", q))
          local ra = tonumber(ffi.cast("uintptr_t", r))
          local wq = ffi.cast("uint64_t *", q)
          local wr = ffi.cast("uint64_t *", r)
          wq[0] = qa + 32; wq[1] = qa + size; wq[2] = ra
          wr[0] = ra + 32; wr[1] = ra + size; wr[2] = qa
          w[2] = qa
          T.fakes[#T.fakes + 1] = q
          T.fakes[#T.fakes + 1] = r
        end
        T.fakes[#T.fakes + 1] = p
        ngx.say(string.format('{"pid":%d,"addr":"0x%x"}', ngx.worker.pid(), a))
      }
    }
`;

function largest(classes: any[], min: number): any {
  return classes.find((c) => c.min_bytes === min) ?? { chunks: 0, in_use_chunks: 0, bytes: 0 };
}

describe("deep scan: heap walk, pool discovery, owners", () => {
  const ngx = new Nginx({
    workers: 1,
    main: process.env.MEMDIAG_CORE_DIR ? `worker_rlimit_core 2g; working_directory ${process.env.MEMDIAG_CORE_DIR};` : "",
    // the setup chunk travels as a Lua long string inside the conf
    memdiagLocations: LOCATIONS.replace(/ngx\.var\.lua_setup/g, `[==[${LUA_SETUP}]==]`),
  });

  beforeAll(async () => {
    await ngx.start();
    await ngx.snapshots();
  });
  afterAll(() => ngx.stop());

  async function get(path: string): Promise<any> {
    const r = await httpGet(ngx.memdiagPort, path);
    if (r.status !== 200) throw new Error(`${path}: ${r.status} ${r.body}`);
    return JSON.parse(r.body);
  }

  async function deep(): Promise<any> {
    const r = await ngx.memdiag("?deep=1");
    expect(r.status).toBe(200);
    const w = JSON.parse(r.body).workers[0];
    expect(w.scan.state).toBe("done");
    return w;
  }

  test("a deep scan fills glibc.size_classes, pools.unrooted and scan; the snapshot stays schema-valid", async () => {
    const s = await deep();
    const v = validateSnapshot(s);
    expect(v.error).toBeUndefined();
    expect(s.glibc.size_classes.length).toBeGreaterThan(3);
    expect(s.scan.bytes_scanned).toBeGreaterThan(0);
    expect(s.scan.slices).toBeGreaterThanOrEqual(1);
    expect(Array.isArray(s.pools.unrooted)).toBe(true);
    // the whole heap is covered: walked bytes at least glibc's own arena figure
    expect(s.scan.heap_bytes).toBeGreaterThanOrEqual(s.glibc.arena_bytes);
    console.log(`deep scan: ${s.scan.bytes_scanned} bytes, ${s.scan.ms_total.toFixed(2)} ms in ${s.scan.slices} slices, max slice ${s.scan.max_slice_ms.toFixed(3)} ms`);
  });

  test("K chunks of 300 KB raise the 256-512 KB class by K (mmapped chunks counted)", async () => {
    const before = largest((await deep()).glibc.size_classes, 262144);
    const K = 7;
    const r = await get(`/t/malloc?n=${K}&size=${300 * 1024}`);
    expect(r.usable).toBeGreaterThanOrEqual(300 * 1024);
    const after = largest((await deep()).glibc.size_classes, 262144);
    expect(after.in_use_chunks - before.in_use_chunks).toBe(K);
  });

  test("a pool kept in a Lua variable is unrooted with exactly its figures, owner lua", async () => {
    const size = 7040;
    const made = await get(`/t/pool?mode=keep&size=${size}&large=3&large_size=${300 * 1024}`);
    expect(made.large_blocks).toBe(3);
    const s = await deep();
    const g = s.pools.unrooted.find((x: any) => x.examples.includes(made.addr));
    expect(g).toBeDefined();
    expect(g.create_size).toBe(size);
    expect(g.pools).toBe(1);
    expect(g.block_bytes).toBe(size);
    expect(g.large_blocks).toBe(3);
    expect(g.large_bytes).toBe(made.large_bytes);
    expect(g.owner).toBe("lua");
  });

  test("a forgotten pool (pointer never kept) is unreferenced (or, through a stale Lua pointer, lua), never a module", async () => {
    const size = 5008;
    const made = await get(`/t/pool?mode=forget&size=${size}&large=2&large_size=${200 * 1024}`);
    expect(made.large_blocks).toBe(2);
    const s = await deep();
    const g = s.pools.unrooted.find((x: any) => x.examples.includes(made.addr));
    expect(g).toBeDefined();
    expect(g.pools).toBe(1);
    expect(g.block_bytes).toBe(size);
    expect(g.large_blocks).toBe(2);
    expect(g.large_bytes).toBe(made.large_bytes);
    // Nothing holds it. The scan is conservative: a live Lua FFI buffer that still holds a
    // stale pointer to where the pool now lives (lua-resty-core keeps the last ngx.var value
    // pointer in a module-level cdata) makes it "lua"; never a module.
    expect(["unreferenced", "lua"]).toContain(g.owner);
    expect(g.owner).not.toMatch(/module|\.so|conf/);
    if (g.owner === "unreferenced") expect(g.retainer).toBe("unreferenced");
  });

  test("chunks crafted to look like pool heads with broken lists are skipped and counted; the worker keeps serving", async () => {
    const fakes = [];
    for (const kind of ["large", "largecycle", "blockcycle"]) fakes.push(await get(`/t/fake?kind=${kind}`));
    const s = await deep();
    const all = s.pools.unrooted.flatMap((g: any) => g.examples);
    for (const f of fakes) expect(all).not.toContain(f.addr);
    const skipped = s.skipped;
    expect(skipped.deep_pool_candidate_lists).toBeGreaterThanOrEqual(3);
    expect((await ngx.memdiag("")).status).toBe(200);
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
  });

  test("a second ?deep=1 while one runs gets the job status (202)", async () => {
    const [a, b] = await Promise.all([ngx.memdiag("?deep=1"), ngx.memdiag("?deep=1")]);
    const codes = [a.status, b.status].sort();
    // one scan runs; the other request is told to wait (or, if the first finished already, runs its own)
    expect(codes[0]).toBe(200);
    if (codes[1] === 202) {
      const st = JSON.parse((a.status === 202 ? a : b).body);
      expect(st.scan.state).toBe("running");
    }
  });

  test("progress is visible in /_memdiag while a deep scan runs", async () => {
    await get(`/t/inflate?n=200000`); // ~55 MB of small chunks
    const running = ngx.memdiag("?deep=1");
    let seen: any;
    for (let i = 0; i < 200 && !seen; i++) {
      const r = await ngx.memdiag("?fresh=1");
      const w = JSON.parse(r.body).workers[0];
      if (w.scan?.state === "running" && w.scan.bytes_scanned > 0) seen = w.scan;
    }
    const done = await running;
    expect(done.status).toBe(200);
    expect(seen).toBeDefined();
    const final = JSON.parse(done.body).workers[0].scan;
    expect(final.state).toBe("done");
    expect(final.bytes_scanned).toBeGreaterThanOrEqual(seen.bytes_scanned);
    expect(final.slices).toBeGreaterThan(1);
    console.log(`scan of ${(final.heap_bytes / 1048576).toFixed(0)} MB heap: ${final.slices} slices, cpu ${final.cpu_ms.toFixed(1)} ms, longest slice cpu ${final.max_slice_cpu_ms.toFixed(3)} ms / wall ${final.max_slice_ms.toFixed(3)} ms, p99 ${final.slice_cpu_p99_ms} ms; ${final.max_slice_phase}`);
  });

  test("no errors in the error log", () => {
    expect(ngx.errors()).toEqual([]);
  });
});
