/**
 * Who holds the Lua heap, on a real worker, for the leak classes users hit, each with the
 * fixture's own numbers as ground truth:
 *   - a module-level cache keyed by a table made per request: found by its path in
 *     package.loaded with exactly as many keys as requests made;
 *   - a module table that grows on every config reload... here on every call of its loader;
 *   - a timer pending an hour whose closure keeps a table: found through the timer's coroutine;
 *   - cdata kept in a list: counted in the census.
 */
import { Nginx, httpGet } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";

const json = async (port: number, p: string) => {
  const r = await httpGet(port, p, 60000);
  if (r.status !== 200) throw new Error(`${p}: ${r.status} ${r.body}`);
  return JSON.parse(r.body);
};

describe("who holds the Lua heap", () => {
  const ngx = new Nginx({
    workers: 1,
    appLocations: `
    location = /t/cached {
        content_by_lua_block {
            local c = package.loaded["app.cache"]
            if not c then c = { by_key = {}, n = 0 } package.loaded["app.cache"] = c end
            c.by_key[{}] = ngx.var.request_uri
            c.n = c.n + 1
            ngx.say(c.n)
        }
    }
    location = /t/reload {
        content_by_lua_block {
            local r = package.loaded["app.routes"]
            if not r then r = { table = {} } package.loaded["app.routes"] = r end
            local n = tonumber(ngx.var.arg_n)
            for i = 1, n do r.table[#r.table + 1] = { path = "/r" .. #r.table, upstream = "u" } end
            ngx.say(#r.table)
        }
    }
    location = /t/timer {
        content_by_lua_block {
            local held = {}
            for i = 1, tonumber(ngx.var.arg_n) do held["s" .. i] = i end
            local ok, err = ngx.timer.at(3600, function(premature) return held end)
            ngx.say(ok and "ok" or err)
        }
    }`,
  });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());

  test("a per-request-keyed cache, a growing route table and a timer's closure are found by path with their exact keys", async () => {
    const N = 1500;
    for (let i = 0; i < N; i++) await httpGet(ngx.appPort, `/t/cached?i=${i}`);
    const routes = Number((await httpGet(ngx.appPort, "/t/reload?n=4000")).body);
    expect((await httpGet(ngx.appPort, "/t/timer?n=2500")).body.trim()).toBe("ok");
    const c = (await json(ngx.memdiagPort, "/_memdiag?lua=census")).census;
    expect(c.ok).toBe(true);
    expect(c.holders_error).toBeUndefined();
    const h = c.holders;
    expect(h.truncated).toBe(false);
    const by = (p: string) => h.tables.find((t: any) => t.path === p);
    const cache = by('package.loaded["app.cache"].by_key');
    expect(cache).toBeDefined();
    expect(cache.keys).toBe(N);
    expect(cache.hash_slots).toBe(2048);
    // its own bytes: header + 2048 nodes of 24; what it reaches first: the N key tables too
    expect(cache.bytes).toBe(64 + 2048 * 24);
    expect(cache.reached_bytes).toBeGreaterThanOrEqual(cache.bytes + N * 64);
    const rt = by('package.loaded["app.routes"].table');
    expect(rt).toBeDefined();
    expect(rt.keys).toBe(routes);
    const timer = h.tables.find((t: any) => /upvalue 1 of <function content_by_lua\(nginx\.conf:\d+\):\d+>$/.test(t.path) && t.keys === 2500);
    expect(timer).toBeDefined();
    expect(timer.path).toMatch(/<stack slot \d+>/);
    // the snapshot carries it, schema-valid
    const [pid] = ngx.workerPids();
    const s = await ngx.nextSnapshotOf(pid);
    expect(validateSnapshot(s).error).toBeUndefined();
    expect(s.lua.census.holders.tables.length).toBeGreaterThan(0);
    expect(ngx.errors()).toEqual([]);
    console.log(h.tables.slice(0, 6).map((t: any) => `${t.path}: ${t.keys} keys, ${t.bytes} B own, ${t.reached_bytes} B reached`).join("\n"));
    const again: string[] = [];
    for (let k = 0; k < 5; k++) {
      const a = (await json(ngx.memdiagPort, "/_memdiag?lua=census")).census;
      again.push(`${a.cpu_ms.toFixed(1)}/${a.slices}/${a.max_slice_ms.toFixed(2)}`);
    }
    console.log(`next censuses (CPU ms/slices/longest ms): ${again.join(" ")}`);
    console.log(`holders walk: ${h.nodes} containers, ${h.objects} objects; census ${c.cpu_ms.toFixed(1)} ms CPU, ${c.slices} slices, longest ${c.max_slice_ms.toFixed(2)} ms`);
  }, 120000);
});
