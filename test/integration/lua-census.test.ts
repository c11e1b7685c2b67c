/**
 * The Lua heap census on a real worker (/_memdiag?lua=census), against what a fixture keeps:
 * 50,000 tables and 20,000 strings of 200 bytes added to a module in package.loaded show up as
 * exactly that many more objects of those types with their bytes; what the objects do not
 * account for stays the VM's own state (a few KB besides it). Then under load: requests that
 * allocate and call collectgarbage() while a census of a ~1M-object heap runs — every attempt
 * either finishes or is dropped with its reason, no crash, no error logged, and a census
 * eventually finishes.
 */
import { Nginx, httpGet, sleep } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";

const json = async (port: number, p: string, ok = [200]) => {
  const r = await httpGet(port, p, 60000);
  if (!ok.includes(r.status)) throw new Error(`${p}: ${r.status} ${r.body}`);
  return JSON.parse(r.body);
};
/** tables of the agent's own that come and go between two censuses: the latest census it keeps (its 20 largest tables) and their snapshot copy */
const AGENT_SLACK = 100;
const byType = (c: any) => Object.fromEntries(c.types.map((t: any) => [t.type, t]));

describe("Lua heap census", () => {
  const ngx = new Nginx({
    workers: 1,
    appLocations: `
    location = /t/keep {
        content_by_lua_block {
            local M = package.loaded["fixture.cache"] or {}
            package.loaded["fixture.cache"] = M
            M.tabs = M.tabs or {}
            M.strs = M.strs or {}
            local nt, ns = tonumber(ngx.var.arg_tables) or 0, tonumber(ngx.var.arg_strings) or 0
            -- the arrays are sized up front: their growth is not what is measured
            if #M.tabs == 0 and nt > 0 then M.tabs = require("table.new")(nt, 0) end
            if #M.strs == 0 and ns > 0 then M.strs = require("table.new")(ns, 0) end
            for i = 1, nt do M.tabs[i] = {} end
            for i = 1, ns do M.strs[i] = string.rep("s", 190) .. string.format("%010d", i) end
            collectgarbage("collect")
            ngx.say(require("cjson").encode({ tables = nt, strings = ns, count = collectgarbage("count") * 1024 }))
        }
    }
    location = /t/gc {
        content_by_lua_block { collectgarbage("collect") ngx.say("ok") }
    }
    location = /t/big {
        content_by_lua_block {
            local M = package.loaded["fixture.big"] or {}
            package.loaded["fixture.big"] = M
            for i = 1, tonumber(ngx.var.arg_n) do M[#M + 1] = { i } end
            ngx.say(#M)
        }
    }
    location = /t/churn {
        content_by_lua_block {
            local t = {}
            for i = 1, 2000 do t[i] = { i, tostring(i) } end
            if ngx.var.arg_gc == "1" then collectgarbage() end
            if ngx.var.arg_step == "1" then collectgarbage("step", 64) end
            ngx.say(#t)
        }
    }`,
  });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());

  test("kept tables and strings appear with their exact counts and bytes", async () => {
    await json(ngx.appPort, "/t/keep?tables=50000&strings=20000"); // the containers exist before the first census
    await httpGet(ngx.appPort, "/t/gc");
    const a = (await json(ngx.memdiagPort, "/_memdiag?lua=census")).census;
    expect(a.ok).toBe(true);
    const k = await json(ngx.appPort, "/t/keep?tables=50000&strings=20000");
    const b = (await json(ngx.memdiagPort, "/_memdiag?lua=census")).census;
    expect(b.ok).toBe(true);
    const A = byType(a), B = byType(b);
    // the second call replaced each container's elements: the first 50,000 tables and 20,000 strings are garbage, collected;
    // what differs is the agent's own: the census it keeps for the snapshots (its 20 largest tables, their copy)
    expect(B.table.count - A.table.count).toBeGreaterThanOrEqual(-AGENT_SLACK);
    expect(B.table.count - A.table.count).toBeLessThanOrEqual(AGENT_SLACK);
    expect(B.table.count).toBeGreaterThanOrEqual(k.tables);
    // an empty table is 64 bytes; the 50,000 of them and their container's array part
    expect(B.table.bytes).toBeGreaterThanOrEqual(k.tables * 64 + k.tables * 8);
    // 200-byte strings: 24-byte header + 204
    expect(B.string.count).toBeGreaterThanOrEqual(k.strings);
    expect(B.string.bytes).toBeGreaterThanOrEqual(k.strings * (24 + 204));
    for (const c of [a, b]) {
      expect(c.objects_bytes + c.other_bytes).toBe(c.heap_bytes);
      // what no object accounts for is the VM's own state: its block, string table, buffer, plus the JIT's buffers
      expect(c.other_bytes).toBeGreaterThanOrEqual(c.vm_bytes);
      expect(c.other_bytes - c.vm_bytes).toBeLessThan(1 << 20);
      // the heap the census found is the one the fixture read after its collection, give or take the requests between
      expect(Math.abs(c.heap_bytes - k.count)).toBeLessThan(1 << 20);
    }
    // the census is in the next snapshot, schema-valid
    const [pid] = ngx.workerPids();
    const s = await ngx.nextSnapshotOf(pid);
    expect(validateSnapshot(s).error).toBeUndefined();
    expect(s.lua.census.time).toBe(b.time);
    console.log(`census of ${b.objects} objects, ${(b.heap_bytes / 1048576).toFixed(1)} MB: ${b.cpu_ms.toFixed(1)} ms CPU, ${b.slices} slices, longest ${b.max_slice_ms.toFixed(2)} ms, collector held ${b.hold_ms.toFixed(1)} ms`);
  }, 60000);

  test("pid=N of another worker: refused with the reason, nothing counted", async () => {
    const r = await httpGet(ngx.memdiagPort, "/_memdiag?lua=census&pid=1");
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error).toMatch(/^lua=census runs in the worker that accepts the request \(\d+\), not in pid 1$/);
  });

  test("new objects between two censuses: +N tables of one array slot each, exactly", async () => {
    await httpGet(ngx.appPort, "/t/big?n=1"); // container exists
    await httpGet(ngx.appPort, "/t/gc");
    const a = byType((await json(ngx.memdiagPort, "/_memdiag?lua=census")).census);
    await httpGet(ngx.appPort, "/t/big?n=30000");
    await httpGet(ngx.appPort, "/t/gc");
    const b = byType((await json(ngx.memdiagPort, "/_memdiag?lua=census")).census);
    // { i } is a table with a colocated 2-slot array: 64 + 2 * 8 bytes; the container's array grows to 32768+1 slots
    const d = b.table.count - a.table.count;
    expect(d).toBeGreaterThanOrEqual(30000);
    expect(d).toBeLessThanOrEqual(30000 + AGENT_SLACK);
    expect(b.table.bytes - a.table.bytes).toBeGreaterThanOrEqual(30000 * 80 + 32768 * 8 - AGENT_SLACK * 1024);
  }, 60000);

  test("under allocation and the application's own collectgarbage(): finish or drop with a reason, no crash", async () => {
    const [pid] = ngx.workerPids();
    await httpGet(ngx.appPort, "/t/big?n=500000", 60000);
    let stop = false;
    let i = 0;
    const drivers = Array.from({ length: 3 }, async (_, d) => {
      while (!stop) {
        i++;
        const q = d === 0 ? "?gc=1" : d === 1 ? "?step=1" : "";
        await httpGet(ngx.appPort, `/t/churn${q}`);
      }
    });
    const results: any[] = [];
    for (let n = 0; n < 6; n++) {
      const r = await httpGet(ngx.memdiagPort, "/_memdiag?lua=census", 60000);
      expect([200, 503]).toContain(r.status);
      results.push(JSON.parse(r.body).census);
    }
    stop = true;
    await Promise.all(drivers);
    expect(ngx.workerPids()).toEqual([pid]);
    const aborted = results.flatMap((c) => c.aborted ?? []);
    for (const why of aborted) expect(why).toMatch(/collector|GC cycle|string table|held longer/);
    for (const c of results) if (!c.ok) expect(c.error).toBeDefined();
    // once the load stops a census finishes, first time
    const quiet = (await json(ngx.memdiagPort, "/_memdiag?lua=census")).census;
    expect(quiet.ok).toBe(true);
    expect(quiet.attempts).toBe(1);
    expect(byType(quiet).table.count).toBeGreaterThan(500000);
    expect(ngx.errors()).toEqual([]);
    console.log(`under load (${i} requests): ${results.filter((c) => c.ok).length}/6 finished, ${aborted.length} attempts dropped: ${[...new Set(aborted)].join("; ")}; quiet census of ${quiet.objects} objects: ${quiet.cpu_ms.toFixed(1)} ms CPU, ${quiet.slices} slices, longest ${quiet.max_slice_ms.toFixed(2)} ms, held ${quiet.hold_ms.toFixed(1)} ms`);
  }, 120000);
});
