/**
 * A lua_shared_dict's keys counted without its lock while two workers write and delete in it
 * as fast as requests come: no worker dies, no error is logged, every snapshot either counts
 * the keys within what the fixture can hold or says why not (keys_error), the walk spans
 * slices; once the writes stop the count is exactly get_keys(0)'s (the fixture's ground truth).
 */
import { Nginx, httpGet, sleep } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";

const BASE = 60000; // keys loaded once
const EXTRA = 5000; // names the churn sets and deletes

describe("lua_shared_dict keys under churn from both workers", () => {
  const ngx = new Nginx({
    workers: 2,
    http: "lua_shared_dict churn 32m;",
    appLocations: `
    location = /t/load {
        content_by_lua_block {
            local d = ngx.shared.churn
            for i = 1, ${BASE} do assert(d:safe_set("b" .. i, i)) end
            ngx.say("ok")
        }
    }
    location = /t/churn {
        content_by_lua_block {
            local d = ngx.shared.churn
            for i = 1, 400 do
                local k = "x" .. math.random(${EXTRA})
                if math.random() < 0.5 then d:set(k, string.rep("v", math.random(200))) else d:delete(k) end
            end
            ngx.say("ok")
        }
    }
    location = /t/truth {
        content_by_lua_block { ngx.say(#ngx.shared.churn:get_keys(0)) }
    }`,
  });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());

  test("counts or says why, never crashes; exact once quiet", async () => {
    expect((await httpGet(ngx.appPort, "/t/load")).status).toBe(200);
    const pids = ngx.workerPids();
    const seen: any[] = [];
    let stop = false;
    const drivers = Array.from({ length: 4 }, async () => {
      while (!stop) await httpGet(ngx.appPort, "/t/churn");
    });
    const t0 = Date.now();
    while (Date.now() - t0 < 6000) {
      for (const p of pids) seen.push(await ngx.nextSnapshotOf(p));
    }
    stop = true;
    await Promise.all(drivers);
    expect(ngx.workerPids()).toEqual(pids);
    let counted = 0, sliced = 0;
    for (const s of seen) {
      expect(validateSnapshot(s).error).toBeUndefined();
      const d = s.shm.find((z: any) => z.name === "churn").dict;
      if (d.keys !== undefined) {
        counted++;
        expect(d.keys).toBeGreaterThanOrEqual(BASE);
        expect(d.keys).toBeLessThanOrEqual(BASE + EXTRA);
      } else expect(d.keys_error).toMatch(/changed while its keys were counted/);
      if (s.slices > 1) sliced++;
    }
    expect(counted).toBeGreaterThan(0);
    expect(sliced).toBeGreaterThan(0);
    const truth = Number((await httpGet(ngx.appPort, "/t/truth")).body);
    for (const p of pids) {
      const d = (await ngx.nextSnapshotOf(p)).shm.find((z: any) => z.name === "churn").dict;
      expect(d).toEqual({ keys: truth, expired: 0 });
    }
    expect(ngx.errors()).toEqual([]);
    // what the walk cost: longest slice of the collections that counted 60k+ keys
    const maxSlice = Math.max(...seen.map((s) => s.max_slice_cpu_ms ?? 0));
    console.log(`churn: ${seen.length} snapshots, ${counted} counted, ${sliced} sliced, longest slice CPU ${maxSlice.toFixed(2)} ms, collect_ms ${seen.map((s) => s.collect_ms.toFixed(1)).join(" ")}`);
  }, 60000);
});
