/**
 * Allocation call paths in the control plane (issue 5, "In the consoles"): a
 * real nginx with the leak fixture pushes to a real control plane; the sampler
 * is armed and read through the websocket command channel (sampler_arm,
 * sampler_top, sampler_disarm), frames are named by the control plane from the
 * fixture's ELF symbol table, fetches are stored and diffed.
 *
 * Ground truth: the fixture's own /leaky/status (its live 300 KB tables), and
 * `nm` of the fixture .so for the static helper's name.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { Nginx, NoNativeNginx, httpGet, sleep } from "../harness/nginx";
import { until } from "../harness/until";
import { startCP, RunningCP, getJson } from "../harness/control-plane";
import { ControlPlane } from "../../control-plane/src/console/client";
import { buildModel } from "../../control-plane/src/console/terminal";
import { renderFrame } from "../../control-plane/src/console/render";
import { fmtBytes } from "../../control-plane/src/format";
import { LEAKY_LOCATIONS, LEAKY_SO, LEAKY_TABLE_SIZE, ensureSampler, leakyLoadModule } from "../harness/fixtures";

async function leaky(ngx: Nginx, p: string): Promise<any> {
  const r = await httpGet(ngx.appPort, p);
  expect(r.status).toBe(200);
  return JSON.parse(r.body);
}

async function post(url: string, body: unknown): Promise<{ status: number; body: any }> {
  const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}

/** the control plane's paths through the fixture's update function with this allocation function */
const fixturePaths = (c: any, fn: string) => c.paths.filter((p: any) => p.fn === fn && p.frames.some((f: any) => f.label.startsWith("ngx_http_leaky_upstream_update+")));

describe("call paths from a real worker in the control plane", () => {
  let cp: RunningCP;
  let ngx: Nginx;
  let key = "";
  let api = "";
  const N = 25;

  /** sends a sampler command through POST .../command and waits for its answer */
  const command = async (command: string, args?: unknown): Promise<any> => {
    const r = await post(`${api}/command`, args ? { command, args } : { command });
    expect(r.status).toBe(202);
    return until(`${command} answer`, async () => {
      const s = await getJson(`${cp.base}/api/commands/${r.body.id}`);
      return s.body.state === "sent" ? undefined : s.body;
    });
  };

  beforeAll(async () => {
    ensureSampler();
    cp = await startCP();
    ngx = new Nginx({ workers: 1, main: leakyLoadModule(), appLocations: LEAKY_LOCATIONS, agent: { control_plane_url: `${cp.ws}/ingest`, interval_s: 1 } });
    await ngx.start();
    const pid = ngx.workerPids()[0];
    key = await until("the worker connected", async () => {
      const w = (await getJson(`${cp.base}/api/workers?state=live`)).body.find((x: any) => x.pid === pid);
      return w?.key as string | undefined;
    });
    api = `${cp.base}/api/workers/${encodeURIComponent(key)}`;
  });
  afterAll(async () => {
    await ngx?.stop();
    await cp?.stop();
  });

  test("before arming: 409 saying the sampler was never armed", async () => {
    const r = await getJson(`${api}/callpaths`);
    expect(r.status).toBe(409);
    expect(r.body.error).toMatch(/never armed/);
    expect((await getJson(`${api}/callpaths?bogus=1`)).status).toBe(400);
    expect((await post(`${api}/command`, { command: "sampler_arm", args: { rate: -1 } })).status).toBe(400);
  });

  test("arm over the command channel; leaky updates appear as a path through the fixture's update function", async () => {
    const arm = await command("sampler_arm", { rate: 1 });
    expect(arm).toMatchObject({ state: "done", command: "sampler_arm" });
    expect(arm.result).toMatchObject({ armed: true, mean_bytes: 1, record_aligned: true });

    await leaky(ngx, "/leaky/reset");
    const a = await getJson(`${api}/callpaths`);
    expect(a.status).toBe(200);
    expect(fixturePaths(a.body, "malloc")).toHaveLength(0);

    for (let i = 0; i < N; i++) await leaky(ngx, "/leaky/update-leak");
    const truth = await leaky(ngx, "/leaky/status");
    expect(truth.tables).toHaveLength(N);

    const b = await getJson(`${api}/callpaths`);
    expect(b.status).toBe(200);
    expect(b.body).toMatchObject({ worker: key, pid: ngx.workerPids()[0] });
    expect(b.body.id).toBeGreaterThan(a.body.id);
    expect(b.body.sampler.drops).toEqual({ table_full: 0, paths_full: 0 });
    const tables = fixturePaths(b.body, "malloc");
    expect(tables).toHaveLength(1);
    // rate 1: every allocation recorded, the estimate is exact = the fixture's live tables
    expect(tables[0]).toMatchObject({ est_bytes: truth.tables.length * LEAKY_TABLE_SIZE, est_count: truth.tables.length });

    // the static helper: the worker could only say module+offset, the control plane names it from the .so's symtab
    const frames = tables[0].frames;
    const iUpd = frames.findIndex((f: any) => f.label.startsWith("ngx_http_leaky_upstream_update+"));
    const helper = frames[iUpd - 1];
    expect(helper.name).toBeNull();
    expect(helper.module).toBe("ngx_http_leaky_upstream_module.so");
    expect(helper.source).toBe("symtab");
    const nm = execFileSync("nm", ["-S", LEAKY_SO], { encoding: "utf8" });
    const m = /^([0-9a-f]+) ([0-9a-f]+) [tT] ngx_http_leaky_upstream_build_table$/m.exec(nm)!;
    const delta = parseInt(helper.offset, 16) - parseInt(m[1], 16);
    expect(delta).toBeGreaterThanOrEqual(0);
    expect(delta).toBeLessThan(parseInt(m[2], 16));
    expect(helper.label).toBe(delta === 0 ? "ngx_http_leaky_upstream_build_table" : `ngx_http_leaky_upstream_build_table+0x${delta.toString(16)}`);
    expect(tables[0].folded).toMatch(/;ngx_http_leaky_upstream_update\+0x[0-9a-f]+;ngx_http_leaky_upstream_build_table\+0x[0-9a-f]+;.*;malloc$/);

    // folded export of a fresh fetch: FlameGraph lines, the fixture's line weighted N x 300 KB
    const f = await fetch(`${api}/callpaths?format=folded`);
    expect(f.status).toBe(200);
    expect(f.headers.get("content-type")).toMatch(/^text\/plain/);
    const lines = (await f.text()).trim().split("\n");
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toMatch(/^[^ ;]+(;[^ ;]+)* \d+$/);
    const leakLines = lines.filter((l) => /ngx_http_leaky_upstream_update\+0x[0-9a-f]+;.*;malloc \d+$/.test(l));
    expect(leakLines).toHaveLength(1);
    expect(Number(leakLines[0].split(" ").pop())).toBe(N * LEAKY_TABLE_SIZE);

    // diff between the two stored fetches: the leak path grew by exactly the fixture's tables
    const d = await getJson(`${api}/callpaths/diff?a=${a.body.id}&b=${b.body.id}`);
    expect(d.status).toBe(200);
    const row = d.body.rows.find((r: any) => r.key === tables[0].key);
    expect(row).toMatchObject({ a_bytes: 0, b_bytes: N * LEAKY_TABLE_SIZE, delta_bytes: N * LEAKY_TABLE_SIZE, delta_count: N });
    expect(d.body.rows[0].delta_bytes).toBeGreaterThanOrEqual(N * LEAKY_TABLE_SIZE);
    const df = await fetch(`${api}/callpaths/diff?a=${a.body.id}&b=${b.body.id}&format=folded`);
    const dl = (await df.text()).trim().split("\n");
    for (const l of dl) expect(l).toMatch(/^[^ ;]+(;[^ ;]+)* \d+ \d+$/);
    expect(dl).toContain(`${tables[0].folded} 0 ${N * LEAKY_TABLE_SIZE}`);

    const hist = await getJson(`${api}/callpaths/history`);
    expect(hist.body.map((h: any) => h.id)).toEqual(expect.arrayContaining([a.body.id, b.body.id]));
    expect((await getJson(`${api}/callpaths/diff?a=${a.body.id}&b=999999`)).status).toBe(404);
    expect((await getJson(`${cp.base}/api/callpaths/${b.body.id}`)).body.paths.length).toBe(b.body.paths.length);
  });

  test("terminal console: the top call paths of the newest stored fetch, leaf → root, within the width", async () => {
    const m = await buildModel(new ControlPlane(cp.base), { windowS: 600, wanted: key, live: null });
    expect(m.callpaths).toBeDefined();
    const frame = renderFrame(m, { width: 80, height: 40, color: false, keys: false }).split("\n");
    const i = frame.findIndex((l) => l.startsWith("CALL PATHS"));
    expect(i).toBeGreaterThan(0);
    const rows = frame.slice(i + 1).filter((l) => / ← /.test(l));
    expect(rows.length).toBeGreaterThan(0);
    for (const l of frame) expect(l.length).toBeLessThanOrEqual(80);
    // the largest path is the fixture's tables: N x 300 KB through malloc ← ngx_alloc
    expect(rows[0].trim().startsWith(`${fmtBytes(N * LEAKY_TABLE_SIZE)}  malloc ← `)).toBe(true);
  });

  test("disarm over the command channel restores the GOT; records stay readable", async () => {
    const d = await command("sampler_disarm");
    expect(d.state).toBe("done");
    expect(d.result).toMatchObject({ armed: false, restore_mismatch: 0 });
    expect(d.result.restored).toBeGreaterThan(0);
    const again = await command("sampler_disarm");
    expect(again).toMatchObject({ state: "failed", error: "not armed" });
    const c = await getJson(`${api}/callpaths?lines=1`);
    expect(c.status).toBe(200);
    const t = fixturePaths(c.body, "malloc")[0];
    expect(t.est_bytes).toBe(N * LEAKY_TABLE_SIZE);
    // file:line from the fixture's DWARF (built with -g): the helper's ngx_palloc call of the table
    const src = fs.readFileSync(path.join(path.dirname(LEAKY_SO), "..", "ngx_http_leaky_upstream_module.c"), "utf8").split("\n");
    const line = src.findIndex((l) => /table = ngx_palloc\(pool, LEAKY_TABLE_SIZE\);/.test(l)) + 1;
    expect(line).toBeGreaterThan(0);
    const helper = t.frames.find((f: any) => f.label.startsWith("ngx_http_leaky_upstream_build_table"));
    expect(helper.line).toBe(`ngx_http_leaky_upstream_module.c:${line}`);
    await leaky(ngx, "/leaky/reset");
    expect(ngx.errors()).toEqual([]);
  });
});

describe("call paths from an agent without the native sampler library", () => {
  let cp: RunningCP;
  let ngx: NoNativeNginx;
  beforeAll(async () => {
    cp = await startCP();
    ngx = new NoNativeNginx({ workers: 1, agent: { control_plane_url: `${cp.ws}/ingest`, interval_s: 1 } });
    await ngx.start();
  });
  afterAll(async () => {
    await ngx?.stop();
    await cp?.stop();
  });

  test("sampler_arm fails with the reason; status says unavailable; callpaths is a 409; snapshots still flow", async () => {
    const pid = ngx.workerPids()[0];
    const w = await until("the worker connected", async () => (await getJson(`${cp.base}/api/workers?state=live`)).body.find((x: any) => x.pid === pid));
    const api = `${cp.base}/api/workers/${encodeURIComponent(w.key)}`;
    const run = async (command: string) => {
      const r = await post(`${api}/command`, { command });
      expect(r.status).toBe(202);
      return until(command, async () => {
        const s = (await getJson(`${cp.base}/api/commands/${r.body.id}`)).body;
        return s.state === "sent" ? undefined : s;
      });
    };
    const st = await run("sampler_status");
    expect(st.state).toBe("done");
    expect(st.result).toMatchObject({ available: false, armed: false, lib: path.join(path.dirname(ngx.luaCopy), "native", "libmemdiag_sampler.so") });
    const arm = await run("sampler_arm");
    expect(arm.state).toBe("failed");
    expect(arm.error).toMatch(/cannot load/);
    const c = await getJson(`${api}/callpaths`);
    expect(c.status).toBe(409);
    expect(c.body.error).toMatch(/never armed/);
    const n = (await getJson(`${api}`)).body.snapshots;
    await until("another snapshot", async () => ((await getJson(`${api}`)).body.snapshots > n ? true : undefined));
    expect(ngx.errors()).toEqual([]);
  });
});
