/**
 * The guided-analysis report on a Lua-land leak (the fixture of lua-suspects.test.ts: a module
 * cache keyed by a table made per request) and on the same cache bounded, under the same traffic.
 * Two real nginx instances (one worker each) push to a real control plane every 2 s and count
 * their Lua heap every 5 s. The window starts at a census taken while traffic is paused and ends
 * at one taken after it stopped, so the cache's keys and value bytes at both ends are the
 * fixture's own counts (/t/payload).
 */
import * as http from "http";
import { getVia } from "../harness/http-agent";
import { startCP, RunningCP, getJson } from "../harness/control-plane";
import { Nginx, sleep } from "../harness/nginx";
import { workerKey, censusAfter } from "../harness/cp-workers";
import { LUA_CACHE_BOUND, LUA_CACHE_PATH, luaCacheLocations } from "../harness/lua-cache";
import type { Report, Step } from "../../control-plane/src/report/model";

const RUN_S = 120;
const step = (r: Report, id: string): Step => r.steps.find((s) => s.id === id)!;

describe("report: a Lua table leak vs a bounded cache", () => {
  let cp: RunningCP;
  const gws: { leak: boolean; ngx: Nginx; keep: http.Agent; key: string; from: number; to: number; start?: any; end?: any }[] = [];
  const payload = async (g: (typeof gws)[number]) => JSON.parse((await getVia(g.ngx.appPort, "/t/payload", g.keep)).body);
  const drive = async (s: number) => {
    const t0 = Date.now();
    const errors: string[] = [];
    await Promise.all(gws.map(async (g) => {
      while (Date.now() - t0 < s * 1000) {
        const r = await getVia(g.ngx.appPort, "/t/req", g.keep).catch((e) => ({ status: 0, body: String(e) }));
        if (r.status !== 200) errors.push(`${g.leak ? "leak" : "bounded"} ${r.status} ${r.body}`);
        await sleep(40);
      }
    }));
    expect(errors).toEqual([]);
  };

  beforeAll(async () => {
    cp = await startCP();
    for (const leak of [true, false]) {
      const ngx = new Nginx({ workers: 1, appLocations: luaCacheLocations(!leak), agent: { control_plane_url: `${cp.ws}/ingest`, interval_s: 2, lua_census_every_s: 5 } });
      gws.push({ leak, ngx, keep: new http.Agent({ keepAlive: true, maxSockets: 1 }), key: "", from: 0, to: 0 });
    }
    await Promise.all(gws.map((g) => g.ngx.start()));
    for (const g of gws) g.key = await workerKey(cp, g.ngx);
    // a few seconds of traffic so the cache is among the census's largest tables, then a census at rest opens the window
    await drive(8);
    let now = Date.now() / 1000;
    for (const g of gws) {
      g.start = await payload(g);
      g.from = await censusAfter(cp, g.key, now);
    }
    await drive(RUN_S);
    now = Date.now() / 1000;
    for (const g of gws) {
      g.end = await payload(g);
      g.to = await censusAfter(cp, g.key, now);
    }
  }, 400000);

  afterAll(async () => {
    for (const g of gws) {
      g.keep.destroy();
      await g.ngx.stop();
    }
    await cp?.stop();
  });

  const report = async (g: (typeof gws)[number]): Promise<Report> => {
    const r = await getJson(`${cp.base}/api/report?worker=${encodeURIComponent(g.key)}&from=${g.from}&to=${Math.max(...gws.map((x) => x.to))}`);
    expect(r.status).toBe(200);
    const rep = r.body as Report;
    console.log(`${g.leak ? "leak" : "bounded"}: fixture ${JSON.stringify({ start: g.start, end: g.end })}\n${rep.summary}\n${rep.steps.map((s) => `${s.id} [${s.verdict}] ${s.finding}`).join("\n")}\nnext: ${rep.next.join("\n")}`);
    return rep;
  };

  test("the leaking worker: the owner step names the table path with the fixture's keys and bytes; LuaJIT, not glibc; no C path claimed", async () => {
    const g = gws[0];
    const r = await report(g);
    const keys = g.end.keys - g.start.keys;
    const values = g.end.value_bytes - g.start.value_bytes;
    expect(g.start.keys).toBeGreaterThan(0);
    expect(keys).toBeGreaterThan(1000);
    expect(r.verdict).toBe("growth");

    // 3. owner: the cache's path, its keys exactly the fixture's at both ends, its bytes at least the values added
    const ow = step(r, "owner");
    expect(ow.verdict).toBe("grew");
    expect(ow.finding.startsWith(`${LUA_CACHE_PATH}: +`)).toBe(true);
    expect(ow.finding).toContain(`${g.start.keys.toLocaleString("en-US")} → ${g.end.keys.toLocaleString("en-US")} keys (+${keys.toLocaleString("en-US")})`);
    const row = ow.facts.find((f) => f.key)!;
    expect(row.label).toBe(LUA_CACHE_PATH);
    expect(row.note).toBe(`${g.start.keys.toLocaleString("en-US")} → ${g.end.keys.toLocaleString("en-US")} keys (+${keys.toLocaleString("en-US")})`);
    // each entry: its value string (the payload plus a string header) and its key, an empty table;
    // the hash part at most doubles past the key count
    expect(row.delta!).toBeGreaterThanOrEqual(values);
    expect(row.delta!).toBeLessThanOrEqual(values + keys * 160 + 2 * 2 ** Math.ceil(Math.log2(g.end.keys)) * 40);
    expect(ow.finding).not.toMatch(/pools/);

    // 1, 2. the growth is LuaJIT's: the Lua heap grew by at least the values; glibc in use did not keep growing
    const al = step(r, "allocator");
    expect(al.verdict).toBe("grew");
    expect(al.finding).toMatch(/no sustained growth/);
    expect(al.finding).not.toMatch(/real growth of live allocations/);
    expect(al.gist).toMatch(/^LuaJIT: /);
    const lua = al.facts.filter((f) => f.label.startsWith("LuaJIT"));
    expect(lua.length).toBeGreaterThan(0);
    for (const f of lua) expect(f.delta!).toBeGreaterThanOrEqual(values);
    const sys = step(r, "system");
    expect(sys.finding).not.toMatch(/glibc heap .* carries/);
    if (sys.verdict === "grew") expect(sys.finding).toMatch(/; LuaJIT allocator carries \d+% of the growth/);
    // 4. no glibc size class claims it
    expect(step(r, "evidence").verdict).not.toBe("grew");

    // 5. code path: no C creation path claimed for Lua memory; where to look instead
    const code = step(r, "code");
    expect(code.verdict).not.toBe("grew");
    expect(code.finding).not.toMatch(/created at|by call path/);
    expect(code.finding).toContain(LUA_CACHE_PATH);
    expect(r.next.join("\n")).not.toMatch(/sampler/);
    expect(r.next.join("\n")).toContain(LUA_CACHE_PATH);
    expect(g.ngx.errors()).toEqual([]);
  });

  test("the bounded cache under the same traffic: no step claims growth", async () => {
    const g = gws[1];
    expect(g.end.keys).toBe(LUA_CACHE_BOUND);
    const r = await report(g);
    for (const s of r.steps) expect(`${s.id}: ${s.verdict}`).not.toBe(`${s.id}: grew`);
    expect(r.verdict).toBe("no sustained growth");
    expect(g.ngx.errors()).toEqual([]);
  });
});
