/**
 * mallinfo2 walks every free chunk with the arena locked and cannot yield: on a fragmented
 * heap it stalls the worker (11 ms at 100k free chunks, 150 ms at 1M on this machine). The
 * agent watches its cost and stops calling it. The fixture location fragments the heap with a
 * known number of free chunks: every other one of N small allocations is freed, the rest stay
 * in use so the freed ones cannot coalesce.
 */
import { Nginx, httpGet } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";

const N = 400000;
const TCACHE_PER_SIZE = 7; // glibc keeps up to 7 freed chunks per size in the thread cache: not in bins
const SIZES = 64; // the fixture cycles through 64 sizes

const FRAGMENT = `
    location = /t/fragment {
      content_by_lua_block {
        local ffi = require "ffi"
        pcall(ffi.cdef, "void *malloc(size_t); void free(void *);")
        local n = tonumber(ngx.var.arg_n)
        local keep = ffi.C.malloc(8 * n)
        local p = ffi.cast("void **", keep)
        for i = 0, n - 1 do p[i] = ffi.C.malloc(32 + (i % ${SIZES}) * 16) end
        local freed = 0
        for i = 0, n - 1, 2 do ffi.C.free(p[i]); p[i] = nil; freed = freed + 1 end
        _G.__md_fragment_keep = keep -- the kept half stays allocated for the worker's life
        ngx.say(freed)
      }
    }`;

describe("mallinfo2 is given up once it gets expensive, with the reason in the snapshot", () => {
  const ngx = new Nginx({ workers: 1, agent: { interval_s: 3600 }, memdiagLocations: FRAGMENT });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());

  const fresh = async () => {
    const r = await ngx.memdiag("?fresh=1");
    expect(r.status).toBe(200);
    const w = JSON.parse(r.body).workers[0];
    expect(validateSnapshot(w).error).toBeUndefined();
    return w;
  };

  test("cheap on a fresh worker: totals and the call's cost are reported", async () => {
    const w = await fresh();
    expect(w.glibc.error).toBeUndefined();
    expect(w.glibc.arena_bytes).toBeGreaterThan(0);
    expect(w.glibc.mallinfo_ms).toBeGreaterThanOrEqual(0);
    expect(w.glibc.free_chunks).toBeLessThan(N / 2);
  });

  test("after fragmenting the heap: the last call counts the fixture's free chunks, then mallinfo2 is no longer called", async () => {
    const r = await httpGet(ngx.memdiagPort, `/t/fragment?n=${N}`, 120000);
    expect(r.status).toBe(200);
    const freed = Number(r.body.trim());
    expect(freed).toBe(N / 2);

    // the next collections: one (or two, if the first call was under the limit) still call it
    let last: any;
    let counted: number | undefined;
    for (let i = 0; i < 3; i++) {
      last = await fresh();
      if (last.glibc.free_chunks !== undefined) counted = last.glibc.free_chunks;
      if (last.glibc.error && last.glibc.mallinfo_ms === undefined) break;
    }
    // glibc's bins hold what the fixture freed, less the few the thread cache keeps
    expect(counted).toBeGreaterThanOrEqual(freed - TCACHE_PER_SIZE * SIZES);
    expect(last.glibc.error).toMatch(/mallinfo2 no longer called: it took [\d.]+ ms for \d+ free chunks/);
    expect(last.glibc.mallinfo_ms).toBeUndefined();
    expect(last.glibc.arena_bytes).toBeUndefined();

    // the rest of the snapshot is still there, the worker serves, one [warn] says why
    expect(last.system.regions.some((x: any) => x.class === "glibc_heap")).toBe(true);
    expect((await httpGet(ngx.appPort, "/ok")).status).toBe(200);
    const warns = ngx.errorLog().split("\n").filter((l) => /mallinfo2 no longer called/.test(l));
    expect(warns).toHaveLength(1);
    expect(ngx.errors().filter((l) => !/mallinfo2 no longer called/.test(l))).toEqual([]);
  });
});
