/**
 * Lua land around the VM on a real worker, against what the fixtures did:
 *   - a lua_shared_dict filled with small values until "no memory", then mostly emptied: its
 *     slab classes show the freed chunks stuck in their class while a value of another size
 *     still fails with "no memory" (reqs/fails exactly the fixture's own allocations);
 *   - whole-page values counted as page allocations;
 *   - keys and expired keys counted along the LRU queue, exactly the fixture's numbers;
 *   - N self-rescheduling timers: pending grows by exactly N.
 */
import { Nginx, httpGet, sleep } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";

const json = async (port: number, p: string) => {
  const r = await httpGet(port, p);
  if (r.status !== 200) throw new Error(`${p}: ${r.status} ${r.body}`);
  return JSON.parse(r.body);
};

describe("lua around the VM: shared dict slabs and keys, timers", () => {
  const ngx = new Nginx({
    workers: 1,
    http: "lua_shared_dict frag 1m;\n  lua_shared_dict pages 1m;\n  lua_shared_dict exp 1m;",
    appLocations: `
    location = /t/frag {
        content_by_lua_block {
            -- 150-byte values: node (68 bytes + key) + value lands in the 256-byte class
            local d = ngx.shared.frag
            local v = string.rep("s", 150)
            local n, err = 0
            while true do
                local ok, e = d:safe_set("k" .. (n + 1), v)
                if not ok then err = e break end
                n = n + 1
            end
            local full_free = d:free_space()
            -- keep one entry in four: every page of the class keeps used chunks
            local deleted = 0
            for i = 1, n do
                if i % 4 ~= 0 then d:delete("k" .. i) deleted = deleted + 1 end
            end
            -- a 1500-byte value needs a 2048-byte chunk: no free page to start that class on
            local ok2, err2 = d:safe_set("big", string.rep("b", 1500))
            ngx.say(require("cjson").encode({ stored = n, first_err = err, full_free = full_free, deleted = deleted,
                kept = n - deleted, big_ok = ok2 or false, big_err = err2, free_space = d:free_space(), capacity = d:capacity() }))
        }
    }
    location = /t/pages {
        content_by_lua_block {
            -- 10,000-byte values: three whole pages each
            local d = ngx.shared.pages
            for i = 1, 10 do assert(d:safe_set("p" .. i, string.rep("p", 10000))) end
            ngx.say(require("cjson").encode({ n = 10, free_space = d:free_space() }))
        }
    }
    location = /t/exp {
        content_by_lua_block {
            local d = ngx.shared.exp
            for i = 1, 50 do assert(d:safe_set("e" .. i, i, 0.1)) end
            for i = 1, 30 do assert(d:safe_set("f" .. i, i)) end
            ngx.say(require("cjson").encode({ expiring = 50, lasting = 30 }))
        }
    }
    location = /t/later {
        content_by_lua_block {
            local function later(premature, n) return n end
            for i = 1, tonumber(ngx.var.arg_n) do assert(ngx.timer.at(3600, later, i)) end
            ngx.say(require("cjson").encode({ started = tonumber(ngx.var.arg_n) }))
        }
    }
    location = /t/timers {
        content_by_lua_block {
            local n = tonumber(ngx.var.arg_n)
            local held = {}
            local function tick(premature, i)
                if premature then return end
                held[i] = (held[i] or 0) + 1
                assert(ngx.timer.at(0.2, tick, i))
            end
            for i = 1, n do assert(ngx.timer.at(0.2, tick, i)) end
            ngx.say(require("cjson").encode({ started = n, pid = ngx.worker.pid() }))
        }
    }`,
  });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());

  const zone = (s: any, name: string) => s.shm.find((z: any) => z.name === name);
  const cls = (z: any, size: number) => z.slab.classes.find((c: any) => c.size === size);

  test("an empty dict: slab read, no keys, all classes unused but the dict's own header", async () => {
    const [s] = await ngx.snapshots();
    expect(validateSnapshot(s).error).toBeUndefined();
    const z = zone(s, "frag");
    expect(z.slab_error).toBeUndefined();
    expect(z.slab.page_size).toBe(4096);
    expect(z.slab.free_pages * z.slab.page_size).toBe(z.free_bytes);
    expect(z.slab.classes.map((c: any) => c.size)).toEqual([8, 16, 32, 64, 128, 256, 512, 1024, 2048]);
    expect(z.dict).toEqual({ keys: 0, expired: 0 });
    // a fresh pool's free pages are one run
    expect(z.slab.free_runs).toBe(1);
    expect(z.slab.largest_free_run_bytes).toBe(z.free_bytes);
    // a non-lua zone gets slab figures but no dict
    expect(zone(s, "memdiag").slab).toBeDefined();
  });

  test("a dict filled to 'no memory' and mostly emptied: freed chunks stay in their class, another size still fails", async () => {
    const [pid] = ngx.workerPids();
    const before = zone(await ngx.nextSnapshotOf(pid), "frag");
    const f = await json(ngx.appPort, "/t/frag");
    expect(f.first_err).toBe("no memory");
    expect(f.big_ok).toBe(false);
    expect(f.big_err).toBe("no memory");
    const s = await ngx.nextSnapshotOf(pid);
    expect(validateSnapshot(s).error).toBeUndefined();
    const z = zone(s, "frag");
    expect(z.dict).toEqual({ keys: f.kept, expired: 0 });
    expect(z.free_bytes).toBe(f.free_space);
    const c256 = cls(z, 256), b256 = cls(before, 256);
    // every stored value, and the one that failed, asked the 256-byte class; one failed
    expect(c256.reqs - b256.reqs).toBe(f.stored + 1);
    expect(c256.fails - b256.fails).toBe(1);
    expect(c256.used).toBe(f.kept);
    // three in four chunks of the class are free, yet no page is: the 2048-byte class could not start
    expect(c256.total - c256.used).toBeGreaterThanOrEqual(f.deleted);
    expect(z.slab.free_pages).toBe(f.free_space / 4096);
    expect(z.slab.free_pages).toBeLessThanOrEqual(1);
    const c2048 = cls(z, 2048), b2048 = cls(before, 2048);
    expect(c2048.reqs - b2048.reqs).toBe(1);
    expect(c2048.fails - b2048.fails).toBe(1);
    // the free chunks in the 256-byte class are most of the zone
    expect((c256.total - c256.used) * 256).toBeGreaterThan(0.5 * z.size_bytes);
  });

  test("whole-page values are counted as page allocations", async () => {
    const [pid] = ngx.workerPids();
    const f = await json(ngx.appPort, "/t/pages");
    const z = zone(await ngx.nextSnapshotOf(pid), "pages");
    expect(z.free_bytes).toBe(f.free_space);
    expect(z.slab.page_alloc_pages).toBe(3 * f.n);
    expect(z.dict).toEqual({ keys: f.n, expired: 0 });
    expect(z.slab.largest_free_run_bytes).toBe(z.free_bytes);
  });

  test("keys past their expiry are counted apart until something removes them", async () => {
    const [pid] = ngx.workerPids();
    const f = await json(ngx.appPort, "/t/exp");
    await sleep(300);
    const z = zone(await ngx.nextSnapshotOf(pid), "exp");
    expect(z.dict).toEqual({ keys: f.expiring + f.lasting, expired: f.expiring });
  });

  test("self-rescheduling timers: pending grows by exactly their number", async () => {
    const [pid] = ngx.workerPids();
    const a = await ngx.nextSnapshotOf(pid);
    const t = await json(ngx.appPort, "/t/timers?n=37");
    expect(t.pid).toBe(pid);
    await sleep(500); // they have fired and rescheduled at least once
    const b = await ngx.nextSnapshotOf(pid);
    expect(validateSnapshot(b).error).toBeUndefined();
    expect(b.lua.timers.pending - a.lua.timers.pending).toBe(t.started);
    expect(b.lua.timers.running).toBe(a.lua.timers.running);
    expect(ngx.errors()).toEqual([]);
  });

  test("what the pending timers run: their callbacks by function, counted through their coroutines", async () => {
    const l = await json(ngx.appPort, "/t/later?n=23");
    const c = (await json(ngx.memdiagPort, "/_memdiag?lua=census")).census;
    expect(c.ok).toBe(true);
    const groups = c.holders.threads;
    // 23 timers an hour away: never started, all pending
    const later = groups.find((g: any) => /^function content_by_lua\(nginx\.conf:\d+\):2$/.test(g.function) && g.pending === l.started);
    expect(later).toBeDefined();
    expect(later.suspended).toBe(0);
    // the 37 self-rescheduling ones of the previous test (each fires every 0.2 s and schedules its successor)
    const tick = groups.find((g: any) => /^function content_by_lua\(nginx\.conf:\d+\):4$/.test(g.function) && g.pending > 0);
    expect(tick).toBeDefined();
    expect(Math.abs(tick.pending - 37)).toBeLessThanOrEqual(5);
    console.log(groups.map((g: any) => `${g.function}: ${g.pending} pending, ${g.suspended} suspended`).join("\n"));
  });
});
