/**
 * nginx shared zones in the snapshot against ground truth: a lua_shared_dict of a
 * known size, filled with a known volume, whose own capacity()/free_space() (read
 * by a test location through lua-resty-core) must agree with used/free bytes.
 */
import { Nginx, httpGet } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";

const MB = 1024 * 1024;

describe("shm zones: every cycle->shared_memory zone with slab usage and owner", () => {
  const ngx = new Nginx({
    workers: 2,
    http: "lua_shared_dict test_dict 10m;\n  limit_req_zone $binary_remote_addr zone=test_limit:1m rate=10r/s;",
    appLocations: `
    location = /t/fill {
        content_by_lua_block {
            local d = ngx.shared.test_dict
            local n = tonumber(ngx.var.arg_n) or 0
            local size = tonumber(ngx.var.arg_size) or 0
            local v = string.rep("x", size)
            for i = 1, n do
                local ok, err = d:set("k" .. i, v)
                if not ok then ngx.status = 500 ngx.say(err) return end
            end
            ngx.say(require("cjson").encode({ capacity = d:capacity(), free_space = d:free_space() }))
        }
    }`,
  });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());

  const zone = (s: any, name: string) => s.shm.find((z: any) => z.name === name);

  test("every zone is listed, sized, owned; the memdiag dict and the test dict are there", async () => {
    const snaps = await ngx.snapshots();
    for (const s of snaps) {
      expect(validateSnapshot(s).error).toBeUndefined();
      const names = s.shm.map((z: any) => z.name).sort();
      expect(names).toEqual(["memdiag", "test_dict", "test_limit"]);
      const t = zone(s, "test_dict");
      expect(t.size_bytes).toBe(10 * MB);
      expect(t.owner).toBe("ngx_http_lua_module");
      expect(t.used_bytes + t.free_bytes).toBe(t.size_bytes);
      expect(zone(s, "test_limit").size_bytes).toBe(1 * MB);
      expect(zone(s, "test_limit").owner).toBe("ngx_http_limit_req_module");
      expect(zone(s, "memdiag").owner).toBe("ngx_http_lua_module");
    }
  });

  test("filling the dict with a known volume: used/free agree with capacity()/free_space()", async () => {
    const empty = JSON.parse((await httpGet(ngx.appPort, "/t/fill?n=0")).body);
    const [pid] = ngx.workerPids();
    const s0 = await ngx.nextSnapshotOf(pid);
    const z0 = zone(s0, "test_dict");
    expect(z0.size_bytes).toBe(empty.capacity);
    expect(z0.free_bytes).toBe(empty.free_space);
    expect(z0.used_bytes).toBe(empty.capacity - empty.free_space);

    // 3000 values of 1000 bytes: at least 3,000,000 bytes more in use
    const r = await httpGet(ngx.appPort, "/t/fill?n=3000&size=1000");
    expect(r.status).toBe(200);
    const full = JSON.parse(r.body);
    // both workers see the same zone: check the other one too
    for (const p of ngx.workerPids()) {
      const s1 = await ngx.nextSnapshotOf(p);
      expect(validateSnapshot(s1).error).toBeUndefined();
      const z1 = zone(s1, "test_dict");
      expect(z1.free_bytes).toBe(full.free_space);
      expect(z1.used_bytes).toBe(full.capacity - full.free_space);
      expect(z1.used_bytes - z0.used_bytes).toBeGreaterThanOrEqual(3000 * 1000);
      // each entry (node + key + 1000-byte value) takes one 2048-byte slab slot: 3000 of them, plus a few pages
      expect(z1.used_bytes - z0.used_bytes).toBeLessThanOrEqual(3000 * 2048 + 16 * 4096);
    }
  });

  test("the zones are classified as shm_zone regions by name (ShmZone.addr)", async () => {
    const [pid] = ngx.workerPids();
    const s = await ngx.nextSnapshotOf(pid);
    const regions = s.system.regions.filter((r: any) => r.class === "shm_zone");
    const named = regions.map((r: any) => r.name);
    // the regions layer (owned elsewhere) names zones from ShmZone.addr when it supports it
    if (named.includes("test_dict")) {
      const r = regions.find((x: any) => x.name === "test_dict");
      expect(r.bytes).toBeGreaterThanOrEqual(10 * MB);
    }
    expect(ngx.errors()).toEqual([]);
  });
});
