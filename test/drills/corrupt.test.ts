/**
 * Drills: the agent meets memory it must not trust.
 *  - Corrupted pool headers: a test-only location writes seeded random garbage into the
 *    80-byte ngx_pool_t header of a pool that is live at that moment — its own request's
 *    pool, its connection's pool (rooted: walked by every collection), or a pool it creates
 *    through FFI (unrooted: found by the deep scan's heap-wide discovery) — then makes the
 *    agent collect on it (synchronously, so nginx itself never sees the garbage), restores
 *    the header and answers what the snapshot said. Garbage kinds: random words, zero,
 *    small integers, all-ones, non-canonical and kernel addresses, unmapped pages, pointers
 *    to the pool itself and into it (cycles), pointers into other live memory.
 *    Cases: 60 (CI), MEMDIAG_DRILL_FULL=1: 1,000 (MEMDIAG_DRILL_CORRUPT=N to choose); a deep
 *    scan on an own corrupted pool every 10th case.
 *    Survived = the request answered 200 with a snapshot that validates against the schema,
 *    the master's worker pid is unchanged and the error log has no "exited on signal".
 *  - Layout mismatch: a layout file for a different build (other version/configure hash,
 *    shifted offsets) forced in with layout_file: pool layers refused with the reason, the
 *    system and allocator layers still there, the worker keeps serving, a deep scan reports
 *    unrooted pools unavailable instead of walking with wrong offsets.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Nginx, httpGet } from "../harness/nginx";
import { ROOT } from "../../control-plane/src/config-file";
import { validateSnapshot } from "../../schema/validate";
import { SEED, envNum, pick, rng, tally } from "./lib";

const CASES = envNum("MEMDIAG_DRILL_CORRUPT", pick(60, 1000));

function layoutFile(): string {
  const f = fs.readdirSync(path.join(ROOT, "layouts")).find((n) => n.startsWith("1.22.1-") && n.endsWith(".json"))!;
  return path.join(ROOT, "layouts", f);
}
const L = JSON.parse(fs.readFileSync(layoutFile(), "utf8"));
const R_POOL = L.structs.ngx_http_request_t.fields.pool;
const R_CONN = L.structs.ngx_http_request_t.fields.connection;
const C_POOL = L.structs.ngx_connection_t.fields.pool;

/**
 * /t/corrupt?seed=S&target=request|connection|own : garbage into a pool header, collect, restore.
 * target=own keeps the corrupted pool (for a deep scan) until /t/restore.
 */
const LOCATIONS = `
    location = /t/corrupt {
        content_by_lua_block {
            local ffi = require "ffi"
            local base = require "resty.core.base"
            pcall(ffi.cdef, [[
              void *ngx_create_pool(size_t size, void *log);
              void ngx_destroy_pool(void *pool);
              void *ngx_palloc(void *pool, size_t size);
              extern void *ngx_cycle;
            ]])
            local C = ffi.C
            local seed = tonumber(ngx.var.arg_seed) or 1
            local target = ngx.var.arg_target or "request"
            math.randomseed(seed)
            local r = base.get_request()
            local pool
            if target == "request" then
                pool = ffi.cast("void **", ffi.cast("char *", r) + ${R_POOL})[0]
            elseif target == "connection" then
                local c = ffi.cast("void **", ffi.cast("char *", r) + ${R_CONN})[0]
                pool = ffi.cast("void **", ffi.cast("char *", c) + ${C_POOL})[0]
            else
                local log = ffi.cast("void **", C.ngx_cycle)[2]
                pool = C.ngx_create_pool(4096, log)
                for i = 1, math.random(0, 3) do C.ngx_palloc(pool, 8192) end -- a few large blocks
            end
            local base_addr = tonumber(ffi.cast("uintptr_t", pool))
            local h = ffi.cast("uint32_t *", pool)
            local saved = {}
            for i = 0, 19 do saved[i] = h[i] end
            local other = tonumber(ffi.cast("uintptr_t", r))
            local function split(v) return v % 4294967296, math.floor(v / 4294967296) end
            local kinds = {}
            for w = 0, 9 do
                local k = math.random(1, 11)
                local lo, hi
                if k == 1 then lo, hi = math.random(0, 4294967295), math.random(0, 4294967295)
                elseif k == 2 then lo, hi = 0, 0
                elseif k == 3 then lo, hi = math.random(1, 4096), 0
                elseif k == 4 then lo, hi = 4294967295, 4294967295
                elseif k == 5 then lo, hi = math.random(0, 4294967295), 0x00008000 + math.random(0, 0x7fff)     -- non-canonical
                elseif k == 6 then lo, hi = math.random(0, 4294967295), 0xffff8000 + math.random(0, 0x7fff)     -- kernel half
                elseif k == 7 then lo, hi = split(4096 * math.random(1, 255))                                      -- low unmapped pages
                elseif k == 8 then lo, hi = split(base_addr)                                                       -- self: cycles
                elseif k == 9 then lo, hi = split(base_addr + 8 * math.random(0, 9))                               -- into the header
                elseif k == 10 then lo, hi = split(other + 8 * math.random(0, 64))                                 -- other live memory
                else lo, hi = split(base_addr + math.random(-65536, 65536))                                        -- near the pool
                end
                h[2 * w], h[2 * w + 1] = lo, hi
                kinds[#kinds + 1] = k
            end
            local ok, json, err
            if target ~= "own" then
                local agent = require "memdiag.agent"
                ok, json, err = pcall(agent.collectAndPublish, false)
                for i = 0, 19 do h[i] = saved[i] end
            else
                _G.__md_corrupt = _G.__md_corrupt or {}
                table.insert(_G.__md_corrupt, { pool = pool, saved = saved })
                ok, json = true, nil
            end
            ngx.header["Content-Type"] = "application/json"
            if not ok then
                ngx.status = 500
                ngx.say(require("cjson").encode({ error = tostring(json), kinds = kinds }))
                return
            end
            ngx.say(require("cjson").encode({ pid = ngx.worker.pid(), target = target, kinds = kinds, err = err or "", snapshot = json or "" }))
        }
    }
    location = /t/restore {
        content_by_lua_block {
            local ffi = require "ffi"
            local n = 0
            for _, e in ipairs(_G.__md_corrupt or {}) do
                local h = ffi.cast("uint32_t *", e.pool)
                for i = 0, 19 do h[i] = e.saved[i] end
                ffi.C.ngx_destroy_pool(e.pool)
                n = n + 1
            end
            _G.__md_corrupt = {}
            ngx.say(n)
        }
    }`;

function crashes(ngx: Nginx): string[] {
  return ngx.errorLog().split("\n").filter((l) => /exited on signal|worker process \d+ exited/.test(l));
}

describe("corrupted pool headers", () => {
  const ngx = new Nginx({ workers: 1, agent: { interval_s: 3600 }, memdiagLocations: LOCATIONS });
  beforeAll(async () => {
    await ngx.start();
    await ngx.snapshots();
  });
  afterAll(() => ngx.stop());

  test(`${CASES} cases of random garbage in live pool headers`, async () => {
    const rand = rng(SEED);
    console.log(`seed ${SEED}`);
    const pid = ngx.workerPids()[0];
    let survived = 0;
    const reasons: Record<string, number> = {};
    const failures: string[] = [];
    let deepScans = 0;
    try {
      for (let i = 0; i < CASES; i++) {
        const seed = Math.floor(rand() * 2 ** 31);
        const deep = i % 10 === 9;
        const target = deep ? "own" : ["request", "connection", "request"][i % 3];
        const r = await httpGet(ngx.memdiagPort, `/t/corrupt?seed=${seed}&target=${target}`, 30000).catch((e) => ({ status: 0, body: String(e), headers: {} }));
        let ok = r.status === 200;
        let snap: any;
        if (ok) {
          const body = JSON.parse(r.body);
          if (deep) {
            const d = await httpGet(ngx.memdiagPort, "/_memdiag?deep=1", 120000).catch((e) => ({ status: 0, body: String(e), headers: {} }));
            ok = d.status === 200;
            if (ok) snap = JSON.parse(d.body).workers[0];
            const rs = await httpGet(ngx.memdiagPort, "/t/restore");
            ok = ok && rs.status === 200 && rs.body.trim() === "1";
            deepScans++;
          } else {
            snap = body.snapshot ? JSON.parse(body.snapshot) : undefined;
            ok = !!snap;
          }
          if (ok) {
            const v = validateSnapshot(snap);
            if (!v.ok) {
              ok = false;
              failures.push(`case ${i} seed ${seed} ${target}: schema: ${v.error}`);
            }
            for (const [k, n] of Object.entries(snap.skipped ?? {})) reasons[k] = (reasons[k] ?? 0) + (n as number);
            if (snap.pools && snap.pools.available === false) reasons[`pools unavailable: ${snap.pools.error}`] = (reasons[`pools unavailable: ${snap.pools.error}`] ?? 0) + 1;
          } else failures.push(`case ${i} seed ${seed} ${target}: ${r.status} ${r.body.slice(0, 200)}`);
        } else failures.push(`case ${i} seed ${seed} ${target}: ${r.status} ${r.body.slice(0, 300)}`);
        const alive = ngx.workerPids();
        if (alive.length !== 1 || alive[0] !== pid) {
          failures.push(`case ${i} seed ${seed} ${target}: worker ${pid} replaced by ${alive}`);
          break;
        }
        if (ok) survived++;
      }
      const crash = crashes(ngx);
      if (crash.length) survived = Math.min(survived, CASES - crash.length);
      console.log(`corrupted headers: ${survived}/${CASES} survived, ${deepScans} deep scans; skip reasons seen: ${JSON.stringify(reasons)}`);
      if (failures.length) console.log(failures.slice(0, 20).join("\n"));
      expect(crash).toEqual([]);
      expect(ngx.workerPids()).toEqual([pid]);
      expect(failures).toEqual([]);
      // the garbage was noticed: skipped with reasons, not silently walked
      expect(Object.keys(reasons).length).toBeGreaterThan(0);
      // and the worker still serves
      expect((await httpGet(ngx.appPort, "/ok")).status).toBe(200);
    } finally {
      tally("corrupted pool headers (random garbage)", CASES, survived, `seed ${SEED}`);
    }
  }, 120000 + CASES * 2000);
});

describe("layout mismatch", () => {
  // a layout "for another build": different version and configure hash, offsets of a build
  // with a different struct packing (every field after the first moved by 8 bytes)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-layout-"));
  const other = JSON.parse(JSON.stringify(L));
  other.id = "1.25.3-0123456789ab";
  other.nginx_version = "1.25.3";
  other.configure_hash = "0123456789ab";
  other.configure = " --prefix=/opt/other-build --with-http_v3_module";
  for (const s of Object.values(other.structs) as any[]) {
    for (const f of Object.keys(s.fields)) if (s.fields[f] > 0) s.fields[f] += 8;
    s.size += 8;
  }
  const file = path.join(dir, `${other.id}.json`);
  fs.writeFileSync(file, JSON.stringify(other));
  fs.chmodSync(dir, 0o755);
  const ngx = new Nginx({ workers: 2, agent: { interval_s: 1, layout_file: file } });
  beforeAll(() => ngx.start());
  afterAll(async () => {
    await ngx.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("refused with the reason; the worker keeps serving and never walks with it", async () => {
    let ok = 0;
    try {
      const pids = ngx.workerPids();
      const snaps = await ngx.snapshots();
      for (const s of snaps) {
        expect(validateSnapshot(s).ok).toBe(true);
        expect(s.layout).toBeNull();
        expect(typeof s.layout_error).toBe("string");
        expect(s.layout_error.length).toBeGreaterThan(10);
        expect(s.pools.available).toBe(false);
        expect(s.system.rss_bytes).toBeGreaterThan(0);
        expect(s.glibc.arena_bytes).toBeGreaterThan(0);
      }
      console.log(`forced layout of another build: layout_error "${snaps[0].layout_error}"`);
      const d = await httpGet(ngx.memdiagPort, "/_memdiag?deep=1", 120000);
      expect(d.status).toBe(200);
      const w = JSON.parse(d.body).workers.find((x: any) => x.scan?.state === "done");
      expect(w).toBeDefined();
      expect(w.pools.unrooted).toBeUndefined();
      for (let i = 0; i < 50; i++) expect((await httpGet(ngx.appPort, "/ok")).status).toBe(200);
      expect(ngx.workerPids()).toEqual(pids);
      expect(crashes(ngx)).toEqual([]);
      const lines = ngx.errorLog().split("\n").filter((l) => /layout/.test(l) && /\[(error|warn)\]/.test(l));
      expect(lines.length).toBeGreaterThanOrEqual(1);
      ok = 1;
    } finally {
      tally("layout of another build forced in", 1, ok);
    }
  }, 120000);
});
