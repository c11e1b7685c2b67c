/**
 * LuaJIT unmaps memory under the region classification. Lua strings and table arrays
 * of 128 KB or more are LuaJIT "direct" chunks, each its own mmap; the kernel merges
 * neighbouring ones into one mapping, and the GC unmaps them when it sweeps. The
 * classification reads a header at every block of such a mapping, so a sweep between
 * reading /proc/self/maps and reading a header leaves a hole where the list says
 * memory is (a SIGSEGV at a page-aligned address, seen in CI). This drives it: request
 * handlers in the same Lua VM make big garbage strings and tables without pause while
 * the worker collects as often as it can. Ground truth: the worker's pid stays the
 * same, nginx logs no crash, every collection answers.
 */
import { Nginx, httpGet } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";
import { envNum, pick, tally } from "./lib";

const LOCATIONS = `
    location = /t/mappings {
      content_by_lua_block {
        -- many mappings: the classification ticks (and used to restart the GC) every few of them
        local ffi = require "ffi"
        pcall(ffi.cdef, [[
          void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off);
          int mprotect(void *addr, size_t len, int prot);
        ]])
        local n = tonumber(ngx.var.arg_n) or 1000
        local p = ffi.C.mmap(nil, n * 2 * 4096, 3, 0x22, -1, 0)
        -- every other page read-only: the kernel cannot merge them, n * 2 mappings
        for i = 0, n - 1 do ffi.C.mprotect(ffi.cast("char *", p) + i * 8192, 4096, 1) end
        package.loaded.memdiag_mappings_test = p
        ngx.say(n * 2)
      }
    }
    location = /t/bigstr {
      content_by_lua_block {
        -- 12 fresh direct chunks per request, 136 KB to 1.5 MB, garbage as soon as we return
        local keep = {}
        local seed = ngx.now() * 1000 + math.random(1, 1e6)
        for i = 1, 12 do
          local n = 139264 + (i * 131072) % 1441792
          keep[i] = string.rep("x", n) .. seed .. i
          if i % 4 == 0 then
            local t = {}
            for j = 1, 20000 do t[j] = j end
            keep[#keep + 1] = t
          end
        end
        ngx.say(#keep)
      }
    }
`;

const SECONDS = envNum("MEMDIAG_UNMAP_SECONDS", pick(25, 120));

describe("region classification while LuaJIT unmaps big strings and tables", () => {
  const ngx = new Nginx({ workers: 1, agent: { interval_s: 3600 }, appLocations: LOCATIONS });
  beforeAll(async () => {
    await ngx.start();
    await ngx.snapshots();
    expect((await httpGet(ngx.appPort, "/t/mappings?n=300")).status).toBe(200);
  });
  afterAll(() => ngx.stop());

  test(`${SECONDS} s of churn with back-to-back fresh collections: the worker never dies`, async () => {
    const pid = ngx.workerPids()[0];
    const until = Date.now() + SECONDS * 1000;
    let churns = 0;
    let collections = 0;
    let failed = "";
    let vanished = 0;
    let luajitSeen = 0;
    const churn = async () => {
      while (Date.now() < until && !failed) {
        const r = await httpGet(ngx.appPort, "/t/bigstr").catch((e) => ({ status: 0, body: String(e) }));
        if (r.status !== 200) failed = `churn answered ${r.status}: ${r.body.slice(0, 200)}`;
        churns++;
      }
    };
    const collect = async () => {
      while (Date.now() < until && !failed) {
        const r = await ngx.memdiag("?fresh=1").catch((e) => ({ status: 0, body: String(e) }));
        if (r.status !== 200) failed = `collection answered ${r.status}: ${r.body.slice(0, 200)}`;
        else {
          const w = JSON.parse(r.body).workers[0];
          const err = validateSnapshot(w).error;
          if (err) failed = `invalid snapshot: ${err}`;
          vanished = Math.max(vanished, w.skipped?.regions_memory_vanished ?? 0);
          luajitSeen = Math.max(luajitSeen, w.system.regions.find((g: any) => g.class === "luajit").bytes);
        }
        collections++;
      }
    };
    await Promise.all([churn(), churn(), churn(), collect(), collect()]);
    console.log(`${churns} churn requests, ${collections} collections in ${SECONDS} s; classifications redone after memory vanished: ${vanished} (in one collection at most); largest luajit region ${luajitSeen} bytes`);
    const alive = ngx.workerPids().length === 1 && ngx.workerPids()[0] === pid && !/exited on signal/.test(ngx.errorLog());
    tally("collections while LuaJIT unmaps memory", collections, failed === "" && alive ? collections : 0, `${churns} churn requests`);
    expect(failed).toBe("");
    expect(ngx.workerPids()).toEqual([pid]);
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
    expect(churns).toBeGreaterThan(20);
    expect(collections).toBeGreaterThan(5);
    // the churn's strings were there to be classified: 12 direct chunks of 136 KB..1.5 MB
    expect(luajitSeen).toBeGreaterThan(4 * 1048576);
  });
});
