/**
 * Allocation sampler under load: arm/disarm 100 times while wrk drives
 * requests that allocate through nginx (pools), lua-cjson (malloc/realloc/free)
 * and the leak fixture (300 KB tables, correct mode). No crash, no growth of
 * the sampler's own memory, GOT back to its original values.
 */
import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Nginx, procStatus, sleep } from "../harness/nginx";
import { LEAKY_LOCATIONS, ensureSampler, gotDifferences, leakyLoadModule, readWords, samplerCall as sampler } from "../harness/fixtures";

const CYCLES = 100;
const MB = 1024 * 1024;

/** Rss of the anonymous mappings of exactly `size` bytes (the sampler's table mapping), or undefined if none. */
function mappingRss(pid: number, size: number): number | undefined {
  let rss: number | undefined;
  let match = false;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (m) {
      match = parseInt(m[2], 16) - parseInt(m[1], 16) === size && m[3] === "0" && m[4] === "";
      continue;
    }
    const r = /^Rss:\s+(\d+) kB/.exec(line);
    if (r && match) rss = (rss ?? 0) + Number(r[1]) * 1024;
  }
  return rss;
}

function mapsCount(pid: number): number {
  return fs.readFileSync(`/proc/${pid}/maps`, "utf8").split("\n").filter(Boolean).length;
}

describe("sampler: arm/disarm under load", () => {
  const ngx = new Nginx({
    workers: 1,
    main: leakyLoadModule(),
    appLocations: `${LEAKY_LOCATIONS}
    location = /cj { content_by_lua_block { ngx.say(require("cjson").encode({ a = string.rep("x", 3000), b = { 1, 2, 3 }, c = ngx.var.request_uri })) } }`,
  });
  let wrk: ChildProcess | undefined;
  let wrkOut = "";
  let script = "";
  beforeAll(async () => {
    ensureSampler();
    await ngx.start();
    script = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-wrk-")), "mix.lua");
    fs.writeFileSync(script, `
local paths = { "/ok", "/cj", "/leaky/update-correct", "/cj?x=1", "/ok" }
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[i % #paths + 1])
end
`);
  });
  afterAll(async () => {
    if (wrk && wrk.exitCode === null) wrk.kill("SIGINT");
    await ngx.stop();
    if (script) fs.rmSync(path.dirname(script), { recursive: true, force: true });
  });

  test(`${CYCLES} arm/disarm cycles while wrk runs: no crash, bounded memory, GOT restored`, async () => {
    const [pid] = ngx.workerPids();
    const before = await sampler(ngx, "got");

    wrk = spawn("wrk", ["-t1", "-c16", "-d300s", "--timeout", "30s", "-s", script, `http://127.0.0.1:${ngx.appPort}`], { stdio: ["ignore", "pipe", "pipe"] });
    wrk.stdout!.on("data", (d) => (wrkOut += d.toString()));
    await sleep(300);

    let rss10 = 0;
    let maps10 = 0;
    let self10 = 0;
    let hits = 0;
    let recorded = 0;
    for (let i = 1; i <= CYCLES; i++) {
      const a = await sampler(ngx, i % 10 === 0 ? "arm&sampler_rate=1" : i % 10 === 5 ? "arm&sampler_aligned=0" : "arm");
      expect(a.armed).toBe(true);
      await sleep(20);
      if (i % 10 === 0) {
        const t = await sampler(ngx, "top&sampler_limit=5");
        expect(t.paths.length).toBeGreaterThan(0);
      }
      const d = await sampler(ngx, "disarm");
      expect(d).toMatchObject({ armed: false, restore_mismatch: 0 });
      expect(d.restored).toBe(a.slots_patched);
      hits += d.stack_cache_hits;
      recorded += d.recorded_aligned + d.sampled;
      if (i % 3 === 0) await sampler(ngx, "clear");
      if (i === 10) {
        await sampler(ngx, "clear");
        rss10 = procStatus(pid).VmRSS;
        maps10 = mapsCount(pid);
        self10 = (await sampler(ngx, "status")).self_bytes;
      }
    }
    await sampler(ngx, "clear");
    const rss100 = procStatus(pid).VmRSS;
    const maps100 = mapsCount(pid);
    const st = await sampler(ngx, "status");
    wrk.kill("SIGINT");
    await new Promise((r) => wrk!.once("exit", r));

    // the load really went through the hooks
    expect(recorded).toBeGreaterThan(1000);
    expect(hits).toBeGreaterThan(recorded / 2);
    expect(wrkOut).toMatch(/Requests\/sec/);
    expect(wrkOut).not.toMatch(/Non-2xx/);
    // no crash, same worker
    expect(ngx.workerPids()).toEqual([pid]);
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
    expect(ngx.errors()).toEqual([]);
    // the sampler's own memory: one mapping, reused; nothing accumulates over 90 more cycles
    expect(st.self_bytes).toBe(self10);
    expect(st.arms).toBe(CYCLES);
    expect(st.disarms).toBe(CYCLES);
    expect(st.live_records).toBe(0);
    expect(rss100 - rss10).toBeLessThan(8 * MB);
    // the table mapping itself: pages given back by clear
    const tables = mappingRss(pid, st.self_bytes);
    if (tables !== undefined) expect(tables).toBeLessThan(64 * 1024);
    if (process.env.MEMDIAG_VERBOSE) console.log(JSON.stringify({ rss10, rss100, maps10, maps100, tables_rss: tables, self_bytes: st.self_bytes, recorded, hits }));
    expect(Math.abs(maps100 - maps10)).toBeLessThanOrEqual(4);
    // GOT: every slot holds its value from before the first arm (scan and /proc/<pid>/mem)
    const after = await sampler(ngx, "got");
    expect(after.hooked).toBe(0);
    expect(gotDifferences(before.scan, after.scan)).toEqual([]);
    const slots = after.scan.map((e: any) => parseInt(e.slot, 16));
    expect(readWords(pid, slots)).toEqual(after.scan.map((e: any) => parseInt(e.value, 16)));
  });
});

describe("sampler armed while aio threads serve files through a thread pool", () => {
  let dir = "";
  const opts = {
    workers: 1,
    main: "thread_pool memdiag_io threads=4 max_queue=65536;",
    appLocations: "",
  };
  const ngx = new Nginx(opts);
  beforeAll(async () => {
    ensureSampler();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-files-"));
    fs.chmodSync(dir, 0o755);
    const file = path.join(dir, "big.bin");
    fs.writeFileSync(file, Buffer.alloc(2 * MB, 7));
    fs.chmodSync(file, 0o644);
    opts.appLocations = `location /files/ { alias ${dir}/; aio threads=memdiag_io; sendfile off; directio off; output_buffers 2 64k; }`;
    await ngx.start();
  });
  afterAll(async () => {
    await ngx.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test("every allocation recorded (rate 1) during a wrk run: no crash, frees matched, records back to baseline", async () => {
    const [pid] = ngx.workerPids();
    const a = await sampler(ngx, "arm&sampler_rate=1");
    expect(a.armed).toBe(true);
    const base = a.live_records;
    const out = await new Promise<string>((resolve, reject) => {
      let s = "";
      const w = spawn("wrk", ["-t1", "-c16", "-d3s", "--timeout", "30s", `http://127.0.0.1:${ngx.appPort}/files/big.bin`], { stdio: ["ignore", "pipe", "pipe"] });
      w.stdout!.on("data", (d) => (s += d.toString()));
      w.on("error", reject);
      w.on("exit", () => resolve(s));
    });
    expect(out).toMatch(/Requests\/sec/);
    expect(out).not.toMatch(/Non-2xx|Socket errors/);
    // the worker really has its thread pool (4 threads + the main one)
    expect(fs.readdirSync(`/proc/${pid}/task`).length).toBeGreaterThanOrEqual(5);
    // wrk has exited; the worker closes the last connections when it sees their FIN
    let st = await sampler(ngx, "status");
    for (let i = 0; i < 50 && st.live_records - base >= 64; i++) {
      await sleep(100);
      st = await sampler(ngx, "status");
    }
    expect(st.recorded_aligned + st.sampled).toBeGreaterThan(1000);
    expect(st.frees_matched).toBeGreaterThan(1000);
    // requests, buffers and pools of the finished requests were freed and matched: nothing accumulates
    expect(st.live_records - base).toBeLessThan(64);
    expect(st.drops).toEqual({ table_full: 0, paths_full: 0 });
    const d = await sampler(ngx, "disarm");
    expect(d.restore_mismatch).toBe(0);
    expect(ngx.workerPids()).toEqual([pid]);
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
    expect(ngx.errors()).toEqual([]);
  });
});

describe("reload and stop while armed", () => {
  const ngx = new Nginx({ workers: 2, main: leakyLoadModule(), appLocations: LEAKY_LOCATIONS });
  beforeAll(async () => {
    ensureSampler();
    await ngx.start();
    await ngx.snapshots();
  });
  // the last test stops nginx itself; stop() may then return early: remove the prefix here
  afterAll(async () => {
    await ngx.stop();
    if (ngx.prefix && !process.env.MEMDIAG_KEEP_PREFIX) fs.rmSync(ngx.prefix, { recursive: true, force: true });
  });

  test("armed workers shut down cleanly on SIGHUP; the new workers start disarmed", async () => {
    const old = ngx.workerPids();
    const all = await sampler(ngx, "arm&sampler_all=1&sampler_rate=1");
    expect(all.workers.filter((w: any) => w.armed)).toHaveLength(2);
    for (const p of old) {
      const r = await sampler(ngx, `status&pid=${p}`);
      expect(r.armed).toBe(true);
    }
    await ngx.reload();
    const now = ngx.workerPids();
    expect(now.some((p) => old.includes(p))).toBe(false);
    await ngx.snapshots();
    const s = await sampler(ngx, "status");
    expect(now).toContain(s.pid);
    expect(s).toMatchObject({ armed: false, loaded: false });
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
    expect(ngx.errors()).toEqual([]);
  });

  test("armed workers exit cleanly on SIGQUIT (graceful stop)", async () => {
    const all = await sampler(ngx, "arm&sampler_all=1");
    expect(all.workers.filter((w: any) => w.armed)).toHaveLength(2);
    const master = ngx.masterPid;
    process.kill(master, "SIGQUIT");
    for (let i = 0; i < 200; i++) {
      try {
        process.kill(master, 0);
      } catch {
        break;
      }
      await sleep(50);
    }
    const log = ngx.errorLog();
    expect(log).toMatch(/exit/);
    expect(log).not.toMatch(/exited on signal/);
  });
});
