/**
 * A Lua leak becomes the top suspect, by its table path, within a couple of minutes; a clean
 * worker under the same traffic has no Lua suspect. Two real nginx instances (one worker each)
 * push to one real control plane; each collects every 2 s and counts its Lua heap every 5 s
 * (agent.lua_census_every_s). Both get the same requests; the leaking one keeps every request's
 * entry in a module-level cache keyed by a table made per request, the clean one keeps the last
 * 50 (a bounded cache). Ground truth: the fixture's own entry count.
 */
import * as http from "http";
import { getVia } from "../harness/http-agent";
import { startCP, RunningCP } from "../harness/control-plane";
import { Nginx, sleep } from "../harness/nginx";
import { LUA_CACHE_BOUND, LUA_CACHE_PATH, luaCacheLocations } from "../harness/lua-cache";

const WINDOW_S = 60;
const PATH = LUA_CACHE_PATH;

const get = getVia;

describe("a Lua table leak as a suspect, by path", () => {
  let cp: RunningCP;
  const gws: { leak: boolean; ngx: Nginx; keep: http.Agent; instance?: string }[] = [];

  beforeAll(async () => {
    cp = await startCP();
    for (const leak of [true, false]) {
      const ngx = new Nginx({
        workers: 1,
        appLocations: luaCacheLocations(!leak),
        agent: { control_plane_url: `${cp.ws}/ingest`, interval_s: 2, lua_census_every_s: 5 },
      });
      gws.push({ leak, ngx, keep: new http.Agent({ keepAlive: true, maxSockets: 4 }) });
    }
    await Promise.all(gws.map((g) => g.ngx.start()));
  });

  afterAll(async () => {
    for (const g of gws) {
      g.keep.destroy();
      await g.ngx.stop();
    }
    await cp?.stop();
  });

  test("the leaking path is the top suspect within a couple of minutes; the bounded cache never is", async () => {
    const t0 = Date.now();
    let stop = false;
    const errors: string[] = [];
    const drivers = gws.map(async (g) => {
      while (!stop) {
        const r = await get(g.ngx.appPort, "/t/req", g.keep).catch((e) => ({ status: 0, body: String(e) }));
        if (r.status !== 200) errors.push(`${g.leak ? "leak" : "clean"} ${r.status} ${r.body}`);
        await sleep(40);
      }
    });
    const leak = gws[0], clean = gws[1];
    let found: any;
    let foundWith: string[] = [];
    let foundAt = 0;
    const luaOfClean: string[] = [];
    const seen: string[] = [];
    try {
      for (let round = 1; round <= 18 && !found; round++) {
        await sleep(t0 + round * 10000 - Date.now());
        const workers = (await (await fetch(`${cp.base}/api/workers`)).json()) as { instance: string; pid: number }[];
        for (const g of gws) g.instance = workers.find((w) => g.ngx.workerPids().includes(w.pid))?.instance ?? g.instance;
        const all = (await (await fetch(`${cp.base}/api/suspects?window=${WINDOW_S}`)).json()) as any[];
        for (const s of all.filter((x) => x.instance === clean.instance && x.owner === "lua")) luaOfClean.push(`${s.metric}: ${s.evidence}`);
        const mine = all.filter((x) => x.instance === leak.instance);
        seen.push(`t=${((Date.now() - t0) / 1000).toFixed(0)}s ${mine.map((x) => `${x.metric} ${x.evidence}`).join(" | ") || "-"}`);
        if (mine.length && mine[0].metric === `lua.table.${PATH}.bytes`) {
          found = mine[0];
          foundWith = mine.map((x) => x.metric);
          foundAt = Date.now() - t0;
        }
      }
    } finally {
      stop = true;
      await Promise.all(drivers);
    }
    const kept = Number((await get(leak.ngx.appPort, "/t/count", leak.keep)).body);
    const keptClean = Number((await get(clean.ngx.appPort, "/t/count", clean.keep)).body);
    console.log(seen.join("\n"));
    console.log(`found after ${foundAt} ms: ${found?.evidence}; fixture: ${kept} entries kept (clean: ${keptClean})`);
    expect(errors).toEqual([]);
    expect(keptClean).toBe(LUA_CACHE_BOUND);
    expect(luaOfClean).toEqual([]);
    expect(found).toBeDefined();
    expect(found.subject).toBe(PATH);
    // the tables on its path (registry, package.loaded, the module) reach what it reaches: not listed again
    expect(foundWith.filter((m) => m.startsWith("lua.table."))).toEqual([`lua.table.${PATH}.bytes`]);
    expect(found.evidence).toMatch(/^package\.loaded\["app\.cache"\]\.by_key: \+\d+ keys, \+[\d.]+ MB in /);
    // the keys it counts grew within what the fixture kept
    expect(found.delta_count).toBeGreaterThan(100);
    expect(found.delta_count).toBeLessThanOrEqual(kept);
  }, 240000);
});
