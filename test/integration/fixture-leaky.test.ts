/**
 * The leak fixture itself (test/fixtures/leaky_upstream): its own status numbers
 * are right and the worker's RSS, read by the test from /proc, moves by what it
 * says it allocated. Later tests (pool discovery, sampler) rely on both.
 */
import { Nginx, httpGet, procStatus } from "../harness/nginx";
import { LEAKY_LOCATIONS, LEAKY_POOL_SIZE, LEAKY_TABLE_SIZE, leakyLoadModule } from "../harness/fixtures";

const N = 100;
const MB = 1024 * 1024;

async function getJson(ngx: Nginx, p: string): Promise<any> {
  const r = await httpGet(ngx.appPort, p);
  expect(r.status).toBe(200);
  expect(r.headers["content-type"]).toBe("application/json");
  return JSON.parse(r.body);
}

/** N updates, one request each (the way a control API would drive it). */
async function updates(ngx: Nginx, loc: string, n: number): Promise<any> {
  let last: any;
  for (let i = 0; i < n; i++) last = await getJson(ngx, loc);
  return last;
}

describe.each([
  ["leak", "bss"],
  ["correct", "bss"],
  ["leak", "conf"],
])("leaky_upstream fixture, mode %s, head held in %s", (mode, holder) => {
  const ngx = new Nginx({
    workers: 1,
    main: leakyLoadModule(),
    http: `leaky_upstream_mode ${mode}; leaky_upstream_holder ${holder};`,
    appLocations: LEAKY_LOCATIONS,
  });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());

  test(`${N} updates: status numbers and worker RSS agree with the mode`, async () => {
    const [pid] = ngx.workerPids();
    const s0 = await getJson(ngx, "/leaky/status");
    expect(s0).toMatchObject({ pid, mode, holder, live_pools: 0, updates: 0, pool_size: LEAKY_POOL_SIZE, table_size: LEAKY_TABLE_SIZE });
    expect(s0.head_in).toBe(holder === "conf" ? "main_conf" : "bss");
    // warm up once (first-request allocations of the worker), then measure
    await updates(ngx, "/leaky/update", 1);
    const rss0 = procStatus(pid).VmRSS;

    const s = await updates(ngx, "/leaky/update", N);
    const rss1 = procStatus(pid).VmRSS;
    const live = mode === "leak" ? N + 1 : 1;
    expect(s.pid).toBe(pid);
    expect(s.updates).toBe(N + 1);
    expect(s.created).toBe(N + 1);
    expect(s.destroyed).toBe(N + 1 - live);
    expect(s.live_pools).toBe(live);
    expect(s.table_allocs).toBe(live);
    expect(s.large_allocs).toBe(live);
    expect(s.pool_blocks).toBe(live); // everything small fits in the first 16 KB block
    expect(s.large_bytes).toBe(live * LEAKY_TABLE_SIZE);
    expect(s.bytes_requested).toBe(s.small_bytes + s.large_bytes);
    expect(s.small_bytes).toBeGreaterThan(live * 1000);
    expect(s.small_bytes).toBeLessThan(live * s.pool_max);
    expect(s.pools).toHaveLength(live);
    expect(new Set(s.pools).size).toBe(live);
    for (const a of [...s.pools, ...s.tables]) expect(a).toMatch(/^0x[0-9a-f]+$/);

    const grew = rss1 - rss0;
    if (mode === "leak") {
      // every leaked update keeps a fully written 300 KB table plus a (partly touched) 16 KB pool block
      expect(grew).toBeGreaterThan(N * LEAKY_TABLE_SIZE * 0.95);
      expect(grew).toBeLessThan(N * (LEAKY_TABLE_SIZE + LEAKY_POOL_SIZE) + 4 * MB);
    } else {
      expect(grew).toBeLessThan(4 * MB);
    }
  });

  test("?n= does several updates in one request; reset destroys every live pool", async () => {
    const before = await getJson(ngx, "/leaky/status");
    const s = await getJson(ngx, "/leaky/update?n=20");
    expect(s.updates).toBe(before.updates + 20);
    expect(s.live_pools).toBe(mode === "leak" ? before.live_pools + 20 : 1);
    const r = await getJson(ngx, "/leaky/reset");
    expect(r.live_pools).toBe(0);
    expect(r.destroyed).toBe(r.created);
    expect((await httpGet(ngx.appPort, "/leaky/update?n=-1")).status).toBe(400);
    expect((await httpGet(ngx.appPort, "/leaky/update?n=100001")).status).toBe(400);
  });

  test("per-location override: update-correct after leaks leaves exactly one pool", async () => {
    await getJson(ngx, "/leaky/update-leak?n=5");
    expect((await getJson(ngx, "/leaky/status")).live_pools).toBe(5);
    const s = await getJson(ngx, "/leaky/update-correct");
    expect(s.live_pools).toBe(1);
    await getJson(ngx, "/leaky/reset");
  });

  test("no errors and no crash in the error log", () => {
    expect(ngx.errors()).toEqual([]);
  });
});
