/**
 * Allocation sampler (issue 5) in a real nginx with the leak fixture: GOT
 * interposition at runtime, call paths of the fixture's leak, exact restore.
 * Ground truth: the fixture's own status, `nm` of the fixture .so, and the GOT
 * words read by the test through /proc/<pid>/mem.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import { Nginx, NGINX_BIN, httpGet } from "../harness/nginx";
import { PLATFORM } from "../harness/platform";
import { LEAKY_LOCATIONS, LEAKY_POOL_SIZE, LEAKY_SO, LEAKY_TABLE_SIZE, ensureSampler, gotDifferences, leakyLoadModule, readWords, samplerCall as sampler } from "../harness/fixtures";
import { validateSnapshot } from "../../schema/validate";

const hexn = (s: string) => parseInt(s, 16);

/** [lowest start, highest end) of the mappings of `file` in process `pid` (/proc/<pid>/maps) */
function mappedRange(pid: number, file: string): [number, number] {
  const rows = fs.readFileSync(`/proc/${pid}/maps`, "utf8").split("\n").filter((l) => l.endsWith(` ${file}`));
  if (rows.length === 0) throw new Error(`${file} not mapped in ${pid}`);
  const r = rows.map((l) => l.split(" ")[0].split("-").map(hexn));
  return [Math.min(...r.map((x) => x[0])), Math.max(...r.map((x) => x[1]))];
}

async function leaky(ngx: Nginx, p: string): Promise<any> {
  const r = await httpGet(ngx.appPort, p);
  expect(r.status).toBe(200);
  return JSON.parse(r.body);
}

/** Paths (from sampler=top) whose frames name the fixture's update function. */
function fixturePaths(top: any, fn: string): any[] {
  return top.paths.filter((p: any) => p.fn === fn && p.frames.some((f: any) => f.name && f.name.startsWith("ngx_http_leaky_upstream_update+")));
}

/** [start, end) of a static function in the fixture .so, from its symbol table. */
function symbolRange(so: string, name: string): [number, number] {
  const out = execFileSync("nm", ["-S", so], { encoding: "utf8" });
  const m = new RegExp(`^([0-9a-f]+) ([0-9a-f]+) [tT] ${name}$`, "m").exec(out);
  if (!m) throw new Error(`${name} not in nm output`);
  return [hexn(m[1]), hexn(m[1]) + hexn(m[2])];
}

describe("allocation sampler with the leak fixture", () => {
  const ngx = new Nginx({ workers: 1, main: leakyLoadModule(), appLocations: LEAKY_LOCATIONS });
  let pid = 0;
  let before: Map<string, string>;
  let beforeScan: any[];
  beforeAll(async () => {
    ensureSampler();
    await ngx.start();
    pid = ngx.workerPids()[0];
  });
  afterAll(() => ngx.stop());

  test("before arming: not loaded; the GOT scan finds nginx's malloc/free slots holding libc's functions", async () => {
    const s = await sampler(ngx, "status");
    expect(s).toMatchObject({ pid, available: true, loaded: false, armed: false });
    const g = await sampler(ngx, "got");
    expect(g.armed).toBe(false);
    expect(g.hooked).toBe(0);
    const nginxSlots = g.scan.filter((e: any) => e.object === NGINX_BIN);
    expect(nginxSlots.map((e: any) => e.fn)).toEqual(expect.arrayContaining(["malloc", "free", "posix_memalign"]));
    // each slot holds libc's function, or (a binary linked without -z now, like the OpenResty
    // and Tengine builds) still its lazy-binding stub inside the binary: never called yet
    const [lo, hi] = mappedRange(pid, NGINX_BIN);
    for (const e of nginxSlots) {
      if (e.value !== e.real) expect(hexn(e.value) >= lo && hexn(e.value) < hi).toBe(true);
    }
    expect(nginxSlots.filter((e: any) => ["malloc", "free"].includes(e.fn)).every((e: any) => e.value === e.real)).toBe(true);
    // the test's own read of the same words
    const words = readWords(pid, nginxSlots.map((e: any) => hexn(e.slot)));
    expect(words).toEqual(nginxSlots.map((e: any) => hexn(e.value)));
    before = new Map(g.scan.map((e: any) => [e.slot, e.value]));
    beforeScan = g.scan;
  });

  test("arm (every allocation sampled): GOT slots of nginx and its libraries point at the hooks", async () => {
    const g0 = await sampler(ngx, "got");
    const a = await sampler(ngx, "arm&sampler_rate=1");
    expect(a).toMatchObject({ pid, armed: true, mean_bytes: 1, depth: 32, record_aligned: true, slots_unwritable: 0 });
    expect(a.slots_patched).toBeGreaterThan(0);
    const names = a.patched_objects.map((o: any) => o.name);
    expect(names).toContain(NGINX_BIN);
    if (PLATFORM.name !== "debian") {
      // OpenResty and Tengine link LuaJIT as a shared library; it allocates with its own
      // allocator over mmap, so the sampler finds no malloc-family slot in it to rewrite,
      // exactly as its relocation table (read here) says
      mappedRange(pid, fs.realpathSync(PLATFORM.luajitLib!)); // linked and loaded
      const lj = g0.scan.filter((e: any) => /libluajit-5\.1\.so/.test(e.object));
      const relocs = execFileSync("sh", ["-c", `readelf -rW ${PLATFORM.luajitLib} | grep -cE ' (malloc|calloc|realloc|free|posix_memalign|memalign|aligned_alloc)' || true`], { encoding: "utf8" }).trim();
      expect(lj.length).toBe(Number(relocs));
    }
    expect(names.some((n: string) => /libc\.so|ld-linux|libmemdiag_sampler/.test(n))).toBe(false);
    expect((await ngx.memdiag("?sampler=arm")).status).toBe(409);

    const g = await sampler(ngx, "got");
    expect(g.hooked).toBe(a.slots_patched);
    expect(g.patched).toHaveLength(a.slots_patched);
    const words = readWords(pid, g.patched.map((p: any) => hexn(p.slot)));
    expect(words).toEqual(g.patched.map((p: any) => hexn(g.hooks[p.fn])));
    for (const p of g.patched) expect(before.get(p.slot)).toBe(p.orig);
  });

  test("the leak's call paths: 300 KB tables and pool blocks, through the fixture's update function", async () => {
    await leaky(ngx, "/leaky/reset");
    const N = 40;
    for (let i = 0; i < N; i++) await leaky(ngx, "/leaky/update-leak");
    const truth = await leaky(ngx, "/leaky/status");
    expect(truth.live_pools).toBe(N);

    const top = await sampler(ngx, "top&sampler_limit=200");
    expect(top.sampler.drops).toEqual({ table_full: 0, paths_full: 0 });
    const tables = fixturePaths(top, "malloc");
    expect(tables).toHaveLength(1);
    // mean interval 1 byte: every allocation is recorded, estimates are exact
    expect(tables[0]).toMatchObject({ records: N, record_bytes: N * LEAKY_TABLE_SIZE, est_bytes: N * LEAKY_TABLE_SIZE, est_count: N });
    const pools = fixturePaths(top, "posix_memalign");
    expect(pools).toHaveLength(1);
    expect(pools[0]).toMatchObject({ records: N, record_bytes: N * LEAKY_POOL_SIZE });

    // frames: module + offset + build-id; the static helper is never named after a neighbour
    const frames = tables[0].frames;
    const iUpd = frames.findIndex((f: any) => f.name && f.name.startsWith("ngx_http_leaky_upstream_update+"));
    const helper = frames[iUpd - 1];
    expect(helper.module).toBe("ngx_http_leaky_upstream_module.so");
    expect(helper.name).toBeNull();
    const [lo, hi] = symbolRange(LEAKY_SO, "ngx_http_leaky_upstream_build_table");
    expect(hexn(helper.offset)).toBeGreaterThanOrEqual(lo);
    expect(hexn(helper.offset)).toBeLessThan(hi);
    expect(helper.label).toBe(`ngx_http_leaky_upstream_module.so+${helper.offset}`);
    const buildId = execFileSync("readelf", ["-n", LEAKY_SO], { encoding: "utf8" }).match(/Build ID: ([0-9a-f]+)/)![1];
    expect(helper.build_id).toBe(buildId);
    expect(frames.some((f: any) => f.module === "nginx" && f.name && f.name.startsWith("ngx_http_core_content_phase+"))).toBe(true);
    expect(tables[0].folded).toMatch(/ngx_http_leaky_upstream_update\+0x[0-9a-f]+;ngx_http_leaky_upstream_module\.so\+0x[0-9a-f]+;.*;malloc$/);

    // join: every live pool of the fixture maps to its recorded first block and creation path
    const look = await sampler(ngx, `lookup&sampler_addr=${truth.pools.join(",")}`);
    expect(look.records).toHaveLength(N);
    for (const r of look.records) {
      expect(r.record).toMatchObject({ path: pools[0].id, fn: "posix_memalign", size: LEAKY_POOL_SIZE });
    }
    const tl = await sampler(ngx, `lookup&sampler_addr=${truth.tables.join(",")}`);
    for (const r of tl.records) expect(r.record).toMatchObject({ path: tables[0].id, fn: "malloc", size: LEAKY_TABLE_SIZE });
  });

  test("frees are matched: reset drops the fixture's records; the correct mode keeps one pool", async () => {
    const s0 = (await sampler(ngx, "status")).frees_matched;
    await leaky(ngx, "/leaky/reset");
    let top = await sampler(ngx, "top&sampler_limit=200");
    expect(fixturePaths(top, "malloc")).toHaveLength(0);
    expect(fixturePaths(top, "posix_memalign")).toHaveLength(0);
    expect(top.sampler.frees_matched).toBeGreaterThanOrEqual(s0 + 80);
    for (let i = 0; i < 10; i++) await leaky(ngx, "/leaky/update-correct");
    top = await sampler(ngx, "top&sampler_limit=200");
    expect(fixturePaths(top, "malloc")[0]).toMatchObject({ records: 1, total_records: 10 + 40 });
    expect(fixturePaths(top, "posix_memalign")[0]).toMatchObject({ records: 1 });
  });

  test("folded export: one FlameGraph line per live path, weights = estimated bytes", async () => {
    const f = await sampler(ngx, "folded");
    const lines = f.folded.trim().split("\n");
    expect(lines).toHaveLength(f.paths);
    let total = 0;
    for (const l of lines) {
      const m = /^(\S+) (\d+)$/.exec(l);
      expect(m).not.toBeNull();
      expect(m![1]).toMatch(/;(malloc|calloc|realloc|posix_memalign|memalign|aligned_alloc)$/);
      total += Number(m![2]);
    }
    expect(total).toBe(f.est_bytes_total);
    expect(lines.some((l: string) => /ngx_http_leaky_upstream_update\+0x[0-9a-f]+;ngx_http_leaky_upstream_module\.so\+0x[0-9a-f]+;.*;malloc 307200$/.test(l))).toBe(true);
  });

  test("leak window: age filters select by allocation time", async () => {
    const young = await sampler(ngx, "top&sampler_limit=200&sampler_window=3600");
    expect(fixturePaths(young, "malloc")[0].records).toBe(1);
    const old = await sampler(ngx, "top&sampler_limit=200&sampler_min_age=3600");
    expect(old.paths).toHaveLength(0);
    expect(old.paths_total).toBe(0);
    expect((await ngx.memdiag("?sampler=top&sampler_window=abc")).status).toBe(400);
  });

  test("disarm restores every GOT slot to its value before arming (scan and /proc/<pid>/mem)", async () => {
    const d = await sampler(ngx, "disarm");
    expect(d).toMatchObject({ armed: false, restore_mismatch: 0, slots_patched: 0 });
    expect(d.restored).toBeGreaterThan(0);
    const g = await sampler(ngx, "got");
    expect(g.hooked).toBe(0);
    expect(g.scan.length).toBe(beforeScan.length);
    expect(gotDifferences(beforeScan, g.scan)).toEqual([]);
    // every slot the sampler rewrote holds exactly its value from before arming
    for (const p of g.patched) expect(p.value).toBe(before.get(p.slot));
    const words = readWords(pid, g.patched.map((p: any) => hexn(p.slot)));
    expect(words).toEqual(g.patched.map((p: any) => hexn(p.orig)));
    // records stay readable after disarm, until clear
    expect((await sampler(ngx, "top")).paths.length).toBeGreaterThan(0);
    await sampler(ngx, "clear");
    expect((await sampler(ngx, "status")).live_records).toBe(0);
    expect((await ngx.memdiag("?sampler=disarm")).status).toBe(409);
  });

  test("default rate (512 KiB): table bytes estimated within 40 %, pool blocks exact", async () => {
    const a = await sampler(ngx, "arm");
    expect(a.mean_bytes).toBe(524288);
    const N = 200;
    await leaky(ngx, "/leaky/reset");
    await leaky(ngx, `/leaky/update-leak?n=${N}`);
    const top = await sampler(ngx, "top&sampler_limit=500");
    const pools = fixturePaths(top, "posix_memalign");
    expect(pools[0]).toMatchObject({ records: N, est_bytes: N * LEAKY_POOL_SIZE });
    const tables = fixturePaths(top, "malloc");
    expect(tables).toHaveLength(1);
    // p = 1 - exp(-300K/512K) = 0.44 per table: sd of the estimate ~ 8.5 % at N = 200
    expect(tables[0].est_bytes).toBeGreaterThan(N * LEAKY_TABLE_SIZE * 0.6);
    expect(tables[0].est_bytes).toBeLessThan(N * LEAKY_TABLE_SIZE * 1.4);
    expect(tables[0].records).toBeLessThan(N);
    await leaky(ngx, "/leaky/reset");
    await sampler(ngx, "disarm");
  });

  test("sampler_depth bounds the frames; sampler_aligned=0 samples pool blocks by bytes like malloc", async () => {
    const a = await sampler(ngx, "arm&sampler_depth=4&sampler_aligned=0&sampler_rate=1048576");
    expect(a).toMatchObject({ depth: 4, record_aligned: false, mean_bytes: 1048576 });
    await leaky(ngx, "/leaky/update-leak?n=100");
    const top = await sampler(ngx, "top&sampler_limit=500");
    for (const p of top.paths) expect(p.frames.length).toBeLessThanOrEqual(4);
    const st = top.sampler;
    expect(st.recorded_aligned).toBe(0);
    // 100 pool blocks of 16 KB at a 1 MiB mean: about 1.5 expected samples among them, never all 100
    const pm = top.paths.filter((p: any) => p.fn === "posix_memalign").reduce((n: number, p: any) => n + p.records, 0);
    expect(pm).toBeLessThan(100);
    await leaky(ngx, "/leaky/reset");
    await sampler(ngx, "disarm");
    await sampler(ngx, "clear");
  });

  test("parameters are validated; no errors in the log; the worker never restarted", async () => {
    expect((await ngx.memdiag("?sampler=bogus")).status).toBe(400);
    expect((await ngx.memdiag("?sampler=arm&sampler_depth=99")).status).toBe(400);
    expect((await ngx.memdiag("?sampler=lookup")).status).toBe(400);
    expect(ngx.workerPids()).toEqual([pid]);
    expect(ngx.errors()).toEqual([]);
  });
});

describe("sampler with two workers: pid=N reaches that worker, sampler_all=1 every worker", () => {
  const ngx = new Nginx({ workers: 2, main: leakyLoadModule(), appLocations: LEAKY_LOCATIONS });
  beforeAll(async () => {
    ensureSampler();
    await ngx.start();
    await ngx.snapshots(); // both workers published (that is how a worker finds the others)
  });
  afterAll(() => ngx.stop());

  test("arm all, status of each pid whichever worker answers, disarm all", async () => {
    const pids = ngx.workerPids();
    const all = await sampler(ngx, "arm&sampler_all=1");
    expect(all.workers.map((w: any) => w.pid).sort()).toEqual(pids);
    for (const w of all.workers) expect(w).toMatchObject({ armed: true, slots_unwritable: 0 });
    // several requests per pid: some are answered by the other worker and handed over
    let handedOver = 0;
    for (let i = 0; i < 6; i++) {
      for (const pid of pids) {
        const r = await ngx.memdiag(`?sampler=status&pid=${pid}`);
        expect(r.status).toBe(200);
        expect(JSON.parse(r.body)).toMatchObject({ pid, armed: true, arms: 1 });
        if (Number(r.headers["x-memdiag-answered-by"]) !== pid) handedOver++;
      }
    }
    expect(handedOver).toBeGreaterThan(0);
    const t = await sampler(ngx, `top&sampler_limit=3&pid=${pids[1]}`);
    expect(t.pid).toBe(pids[1]);
    expect(Array.isArray(t.paths)).toBe(true);
    expect((await ngx.memdiag("?sampler=status&pid=1")).status).toBe(404);
    const off = await sampler(ngx, "disarm&sampler_all=1");
    expect(off.workers).toHaveLength(2);
    for (const w of off.workers) expect(w).toMatchObject({ armed: false, restore_mismatch: 0 });
    const again = await ngx.memdiag(`?sampler=disarm&pid=${pids[0]}`);
    expect(again.status).toBe(409);
    expect(JSON.parse(again.body).error).toMatch(/not armed/);
    expect(ngx.errors()).toEqual([]);
  });
});

describe("sampler joined with the pool layer: unrooted groups gain created_at", () => {
  const ngx = new Nginx({ workers: 1, main: leakyLoadModule(), appLocations: LEAKY_LOCATIONS });
  beforeAll(async () => {
    ensureSampler();
    await ngx.start();
  });
  afterAll(() => ngx.stop());

  test("the fixture's leaked pools are created by ngx_http_leaky_upstream_update", async () => {
    await sampler(ngx, "arm");
    const N = 30;
    const truth = await leaky(ngx, `/leaky/update-leak?n=${N}`);
    expect(truth.live_pools).toBe(N);
    const deep = await ngx.memdiag("?deep=1");
    expect(deep.status).toBe(200);
    const j = await sampler(ngx, "pools");
    // the group holding the fixture's pools (found by the deep scan on the heap, independent of the sampler)
    const g = j.groups.find((x: any) => x.pools >= N && /leaky_upstream/.test(String(x.owner)));
    expect(g).toBeDefined();
    if (process.env.MEMDIAG_VERBOSE) console.log(JSON.stringify({ ...g, created_at: { ...g.created_at, frames: g.created_at.frames.slice(0, 6).map((f: any) => f.label) } }));
    expect(g.matched).toBe(g.examples);
    expect(g.created_at.fn).toBe("posix_memalign");
    expect(g.created_at.examples_on_path).toBe(g.examples);
    const names = g.created_at.frames.map((f: any) => f.name ?? "");
    expect(names.some((n: string) => n.startsWith("ngx_http_leaky_upstream_update+"))).toBe(true);
    expect(names.some((n: string) => n.startsWith("ngx_create_pool+"))).toBe(true);
    // the same path rides in the snapshot itself (pools.unrooted[].created_at), for the control plane
    const w = JSON.parse(deep.body).workers[0];
    expect(validateSnapshot(w).error).toBeUndefined();
    const sg = w.pools.unrooted.find((x: any) => x.signature === g.signature);
    expect(sg.created_at).toEqual(g.created_at.frames.map((f: any) => f.label));
    await sampler(ngx, "disarm");
    expect(ngx.errors()).toEqual([]);
  });
});
