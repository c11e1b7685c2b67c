/**
 * Memory unmapped between the slices of a deep scan. The maps are no longer re-read
 * after every yield (only lazily: the brk heap is checked against sbrk(0), anything
 * else re-reads /proc/self/maps at the first check after a yield), so this drives the
 * case that design must survive: while a scan runs on a heap big enough for hundreds
 * of slices, a test location keeps creating and destroying nginx pools whose blocks
 * large allocations are mmapped chunks (34 MB: above glibc's largest dynamic mmap
 * threshold) and whose 256 KB blocks come and go from the brk heap (which glibc
 * trims), and frees and re-mallocs 34 MB plain chunks, so that
 * mappings the scan listed vanish (and others appear) between its slices. Ground truth:
 * the worker's pid stays the same, nginx logs no crash, every scan finishes.
 */
import { INFLATE_LOCATION } from "../harness/deep";
import { Nginx, httpGet } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";

const LOCATIONS = `
${INFLATE_LOCATION}
    location = /t/churn {
      content_by_lua_block {
        local ffi = require "ffi"
        pcall(ffi.cdef, [[
          void *ngx_create_pool(size_t size, void *log);
          void ngx_destroy_pool(void *pool);
          void *ngx_palloc(void *pool, size_t size);
          void *malloc(size_t size);
          void free(void *p);
          extern void *ngx_cycle;
        ]])
        local C = ffi.C
        local S = package.loaded.memdiag_unmap_test or { pools = {}, chunks = {} }
        package.loaded.memdiag_unmap_test = S
        local log = ffi.cast("void **", C.ngx_cycle)[2]
        -- destroy what the previous round made (their mmapped blocks are unmapped now)
        for i = 1, #S.pools do C.ngx_destroy_pool(S.pools[i]) end
        for i = 1, #S.chunks do C.free(S.chunks[i]) end
        S.pools, S.chunks = {}, {}
        for i = 1, tonumber(ngx.var.arg_n or 8) do
          local p = C.ngx_create_pool(262144, log)
          C.ngx_palloc(p, 1024)
          -- above glibc's largest dynamic mmap threshold (32 MB): always an mmapped chunk
          C.ngx_palloc(p, 34 * 1048576)
          S.pools[#S.pools + 1] = p
          local c = C.malloc(34 * 1048576)
          ffi.fill(c, 64, 0)
          S.chunks[#S.chunks + 1] = c
        end
        ngx.say(#S.pools)
      }
    }
`;

describe("deep scan while mmapped pools and chunks are unmapped between its slices", () => {
  const ngx = new Nginx({ workers: 1, agent: { interval_s: 3600 }, appLocations: LOCATIONS });
  beforeAll(async () => {
    await ngx.start();
    await ngx.snapshots();
    // ~25 MB of small chunks: a few hundred slices per scan
    const r = await httpGet(ngx.appPort, "/t/inflate?n=100000");
    expect(r.status).toBe(200);
  });
  afterAll(() => ngx.stop());

  test("5 scans with continuous churn: every scan finishes, the worker never dies", async () => {
    const pid = ngx.workerPids()[0];
    let churns = 0;
    let mmappedSeen = 0;
    for (let i = 0; i < 5; i++) {
      const scan = ngx.memdiag("?deep=1");
      let done = false;
      scan.finally(() => (done = true));
      while (!done) {
        const c = await httpGet(ngx.appPort, "/t/churn?n=8");
        expect(c.status).toBe(200);
        churns++;
      }
      const r = await scan;
      expect(r.status).toBe(200);
      const w = JSON.parse(r.body).workers[0];
      expect(w.scan.state).toBe("done");
      expect(w.scan.slices).toBeGreaterThan(20);
      expect(validateSnapshot(w).error).toBeUndefined();
      expect(w.pid).toBe(pid);
      mmappedSeen = Math.max(mmappedSeen, w.scan.mmapped_chunks);
      console.log(`scan ${i}: ${w.scan.slices} slices, maps reads ${w.scan.maps_reads}, mmapped chunks ${w.scan.mmapped_chunks}, longest slice cpu ${w.scan.max_slice_cpu_ms.toFixed(2)} ms; skipped ${JSON.stringify(w.skipped)}`);
    }
    // the churn did run while the scans did (tens of rounds, each unmapping 8 pools' blocks)
    expect(churns).toBeGreaterThan(10);
    // the scans did list the churned mmapped chunks (8 pools' large allocations + 8 chunks)
    expect(mmappedSeen).toBeGreaterThanOrEqual(16);
    expect(ngx.workerPids()).toEqual([pid]);
    expect(ngx.errorLog()).not.toMatch(/exited on signal|deep scan failed/);
  });
});
