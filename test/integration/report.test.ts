/**
 * The guided-analysis report against the leak fixture (test/fixtures/leaky_upstream) and a
 * clean workload, end to end: two real nginx instances (one worker each, agents pushing to a
 * real control plane every second, a deep scan every 3 s), the leaking one with the allocation
 * sampler armed (rate 1) before its first update. Both get one upstream update a second for
 * 130 s; the leaking one keeps every pool, the correct one destroys the previous pool.
 *
 * Ground truth is the fixture's own /leaky/status (pools, blocks and bytes it holds) read over
 * the connection that made the updates; the report window starts at a deep snapshot taken
 * before the first update, so every figure of the window is the fixture's own count.
 * Also: the CLI (history and --url live mode), strict parameters, the HTML file opened in
 * Chromium offline with its charts drawn, and the web console's Report view.
 */
import * as fs from "fs";
import * as path from "path";
import { Nginx, httpGet, sleep } from "../harness/nginx";
import { until } from "../harness/until";
import { startCP, RunningCP, getJson, tempDir } from "../harness/control-plane";
import { workerKey, deepAfter } from "../harness/cp-workers";
import { openPage, HeadlessPage } from "../harness/browser";
import { LEAKY_LOCATIONS, LEAKY_POOL_SIZE, LEAKY_TABLE_SIZE, ensureSampler, leakyLoadModule } from "../harness/fixtures";
import { ROOT } from "../../control-plane/src/config-file";
import { fmtBytes } from "../../control-plane/src/format";
import { reportMain } from "../../control-plane/src/report/cli";
import { LiveSource } from "../../control-plane/src/report/live";
import { buildReport } from "../../control-plane/src/report/build";
import type { Report, Step } from "../../control-plane/src/report/model";

const RUN_S = 130;
const OWNER_RE = /^ngx_http_leaky_upstream_module\.so \((\.bss\+0x[0-9a-f]+|ngx_http_leaky_upstream_head)\)$/;

async function app(ngx: Nginx, p: string): Promise<any> {
  const r = await httpGet(ngx.appPort, p);
  if (r.status !== 200) throw new Error(`${p}: ${r.status} ${r.body}`);
  return JSON.parse(r.body);
}

const step = (r: Report, id: string): Step => r.steps.find((s) => s.id === id)!;

/** charts of a page drawn into a canvas: per chart, the count of non-white pixels (an SVG that draws nothing has none) */
async function inkPerChart(page: import("playwright-core").Page | import("playwright-core").Frame): Promise<{ cls: string; ink: number }[]> {
  return page.evaluate(async () => {
    const out: { cls: string; ink: number }[] = [];
    for (const svg of Array.from(document.querySelectorAll("svg.chart"))) {
      const w = Number(svg.getAttribute("width")), h = Number(svg.getAttribute("height"));
      const img = new Image();
      img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(new XMLSerializer().serializeToString(svg));
      await img.decode();
      const c = document.createElement("canvas");
      c.width = w;
      c.height = h;
      const g = c.getContext("2d")!;
      g.fillStyle = "#fff";
      g.fillRect(0, 0, w, h);
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, w, h).data;
      let ink = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240) ink++;
      out.push({ cls: svg.getAttribute("class") ?? "", ink });
    }
    return out;
  });
}

describe("report: leak fixture vs clean workload", () => {
  let cp: RunningCP;
  let leak: Nginx, clean: Nginx;
  let leakKey = "", cleanKey = "";
  let from = 0, to = 0, cleanFrom = 0;
  let truth: any, cleanTruth: any;
  let leakReport: Report;

  const api = (p: string) => getJson(`${cp.base}${p}`);
  const command = async (key: string, command: string, args?: unknown): Promise<any> => {
    const r = await fetch(`${cp.base}/api/workers/${encodeURIComponent(key)}/command`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(args ? { command, args } : { command }) });
    const id = ((await r.json()) as any).id;
    return until(`${command} answer`, async () => {
      const s = await api(`/api/commands/${id}`);
      return s.body.state === "sent" ? undefined : s.body;
    });
  };
  beforeAll(async () => {
    ensureSampler();
    cp = await startCP({ staticDir: path.join(ROOT, "control-plane", "web") });
    const load = leakyLoadModule();
    const mk = (mode: string) => new Nginx({ workers: 1, main: load, http: `leaky_upstream_mode ${mode};`, appLocations: LEAKY_LOCATIONS, agent: { control_plane_url: `${cp.ws}/ingest`, interval_s: 1, deep_interval_s: 3 } });
    leak = mk("leak");
    clean = mk("correct");
    await Promise.all([leak.start(), clean.start()]);
    [leakKey, cleanKey] = await Promise.all([workerKey(cp, leak), workerKey(cp, clean)]);
    const arm = await command(leakKey, "sampler_arm", { rate: 1 });
    expect(arm.state).toBe("done");
    // the call paths at the window's start (nothing of the fixture outstanding yet)
    expect((await api(`/api/workers/${encodeURIComponent(leakKey)}/callpaths`)).status).toBe(200);
    const now = Date.now() / 1000;
    [from, cleanFrom] = await Promise.all([deepAfter(cp, leakKey, now), deepAfter(cp, cleanKey, now)]);
    // one update a second on each, over one keepalive connection each (the same worker answers)
    const t0 = Date.now();
    for (let i = 0; Date.now() - t0 < RUN_S * 1000; i++) {
      await Promise.all([app(leak, "/leaky/update"), app(clean, "/leaky/update")]);
      await sleep(t0 + (i + 1) * 1000 - Date.now());
    }
    [truth, cleanTruth] = await Promise.all([app(leak, "/leaky/status"), app(clean, "/leaky/status")]);
    // the call paths at the end, then a deep snapshot after the last update closes the window
    expect((await api(`/api/workers/${encodeURIComponent(leakKey)}/callpaths`)).status).toBe(200);
    // a deep scan that started after the last update closes the window
    const end = Date.now() / 1000;
    to = await deepAfter(cp, leakKey, end);
    await deepAfter(cp, cleanKey, end);
    const r = await api(`/api/report?worker=${encodeURIComponent(leakKey)}&from=${from}&to=${to}`);
    expect(r.status).toBe(200);
    leakReport = r.body;
  }, 400000);

  afterAll(async () => {
    await leak?.stop();
    await clean?.stop();
    await cp?.stop();
  });

  test("the leaking worker: each step names the layer, owner, size class and call path with the fixture's figures", () => {
    const r = leakReport;
    const live = truth.live_pools;
    const held = truth.large_bytes + truth.pool_block_bytes; // what the fixture holds, as it requested it
    console.log(`fixture: ${JSON.stringify({ ...truth, pools: undefined, tables: undefined })}\n${r.summary}\n${r.steps.map((s) => `${s.id} [${s.verdict}] ${s.finding}`).join("\n")}`);
    expect(truth.mode).toBe("leak");
    expect(live).toBe(truth.updates);
    expect(live).toBeGreaterThan(100);
    expect(r).toMatchObject({ verdict: "growth", basis: "trend", worker: { key: leakKey, pid: leak.workerPids()[0] } });

    // 1. system: RSS grew, by about what the fixture holds (the tables are written through: resident), in the glibc heap
    const sys = step(r, "system");
    expect(sys.verdict).toBe("grew");
    const rss = sys.facts.find((f) => f.label === "RSS")!;
    expect(rss.delta!).toBeGreaterThan(0.9 * truth.large_bytes);
    expect(rss.delta!).toBeLessThan(1.25 * held);
    // the glibc heap is the layer that carries the growth, and its growth is the fixture's blocks (resident)
    expect(sys.finding).toMatch(/; glibc heap \(brk heap, arenas, mmapped chunks\) carries \d+% of the growth/);
    const heap = sys.facts.find((f) => f.label.startsWith("glibc heap"))!;
    expect(heap.delta!).toBeGreaterThan(0.95 * truth.large_bytes);
    expect(heap.delta!).toBeLessThan(held + live * 8192 + (2 << 20));
    expect(sys.ruled_out.some((x) => x.startsWith("file mappings (page cache)"))).toBe(true);

    // 2. allocator: glibc in use grew by what the fixture holds (usable sizes: at most a page of slack per block)
    const al = step(r, "allocator");
    expect(al.verdict).toBe("grew");
    expect(al.finding).toMatch(/real growth of live allocations, not fragmentation/);
    expect(al.facts[0].delta!).toBeGreaterThanOrEqual(held);
    expect(al.facts[0].delta!).toBeLessThanOrEqual(held + 2 * live * 8192 + (2 << 20));

    // 3. owner: the fixture's unrooted pool group, all of its pools, held by the module's .bss
    const ow = step(r, "owner");
    expect(ow.verdict).toBe("grew");
    expect(ow.finding).toContain(`0 → ${live} pools (+${live})`);
    expect(ow.finding).toContain(`pools created with size ${LEAKY_POOL_SIZE}`);
    const owner = ow.facts.find((f) => f.label === "owner")!.note!;
    expect(owner).toMatch(OWNER_RE);
    expect(ow.facts.find((f) => f.label === "retainer path")!.note!.startsWith(`${owner} → pool`)).toBe(true);
    const group = ow.facts.find((f) => f.key)!;
    expect(group.delta!).toBeGreaterThanOrEqual(held);
    expect(group.delta!).toBeLessThanOrEqual(held + live * 8192);

    // 4. evidence: the 256–512 KB class rose by exactly the fixture's tables, all in use
    const ev = step(r, "evidence");
    expect(ev.verdict).toBe("grew");
    expect(ev.finding.startsWith(`256–512 KB chunks: `)).toBe(true);
    expect(ev.finding).toContain(`+${live} since the window's start`);
    expect(ev.finding).toContain(`+${live} in use)`);
    expect(ev.finding).toContain(`the growing pool group's large blocks +${live}`);

    // 5. code path: the group's creation path, and the tables' path grew by exactly the fixture's tables
    const code = step(r, "code");
    expect(code.verdict).toBe("grew");
    expect(code.finding).toMatch(/^The growing pool group was created at [^;]*ngx_create_pool\+0x[0-9a-f]+ ← ngx_http_leaky_upstream_update\+0x[0-9a-f]+/);
    expect(code.finding).toContain(`+${fmtBytes(truth.table_allocs * LEAKY_TABLE_SIZE)} (${truth.table_allocs} allocations between two fetches) at malloc ← ngx_alloc`);
    expect(code.finding).toMatch(/← ngx_http_leaky_upstream_build_table\+0x[0-9a-f]+ ← ngx_http_leaky_upstream_update\+0x/);
    expect(code.chart?.kind).toBe("flame");
    expect(r.summary).toContain(`(0 → ${live} pools)`);
  });

  test("the clean worker: no step claims growth; no sustained growth with its figures", async () => {
    expect(cleanTruth).toMatchObject({ mode: "correct", live_pools: 1 });
    expect(cleanTruth.updates).toBeGreaterThan(100);
    const r = (await api(`/api/report?worker=${encodeURIComponent(cleanKey)}&from=${cleanFrom}&to=${to}`)).body as Report;
    console.log(`clean: ${r.summary}\n${r.steps.map((s) => `${s.id} [${s.verdict}] ${s.finding}`).join("\n")}`);
    for (const s of r.steps) expect(`${s.id}: ${s.verdict}`).not.toBe(`${s.id}: grew`);
    expect(r.verdict).toBe("no sustained growth");
    expect(r.summary).toMatch(/no sustained growth — RSS [\d.]+ [KMG]?B → [\d.]+ [KMG]?B \([+-]/);
    expect(step(r, "owner").verdict).toBe("stable");
  });

  test("strict parameters: unknown or malformed ones are a 400 naming the problem; unknown workers a 404", async () => {
    expect(await api("/api/report?bogus=1")).toMatchObject({ status: 400, body: { error: expect.stringMatching(/^unknown parameter 'bogus'; valid: worker, instance, window, from, to, format, callpaths/) } });
    expect((await api(`/api/report?worker=${encodeURIComponent(leakKey)}&format=pdf`)).body.error).toMatch(/^format: expected text, md, html, json/);
    expect((await api(`/api/report?worker=${encodeURIComponent(leakKey)}&window=soon`)).status).toBe(400);
    expect((await api(`/api/report?worker=${encodeURIComponent(leakKey)}&window=1h&from=-10m`)).body.error).toBe("give window or from (with to), not both");
    expect((await api("/api/report?worker=nope")).status).toBe(404);
    expect((await api("/api/report")).body.error).toMatch(/^several instances stored/);
    // an instance: the report is about its fastest-growing worker
    const inst = (await api(`/api/workers/${encodeURIComponent(leakKey)}`)).body.instance;
    const byInst = await api(`/api/report?instance=${encodeURIComponent(inst)}&window=2m&format=md&callpaths=stored`);
    expect(byInst.status).toBe(200);
    expect(byInst.body).toContain(`- worker ${leakKey} (pid ${leak.workerPids()[0]}`);
  });

  test("memdiag report: the stored history rendered by the CLI, usage errors", async () => {
    const dir = tempDir();
    const out = path.join(dir, "r.md");
    const code = await reportMain(["--control-plane", cp.base, "--worker", String(leak.workerPids()[0]), "--from", String(from), "--to", String(to), "--format", "md", "--out", out]);
    expect(code).toBe(0);
    const md = fs.readFileSync(out, "utf8");
    expect(md.startsWith("# Memory report: growth\n")).toBe(true);
    expect(md).toContain(`**${leakReport.summary.replace(/\|/g, "\\|")}**`);
    for (const s of leakReport.steps) expect(md).toContain(`— ${s.verdict === "grew" ? "GREW" : s.verdict === "stable" ? "STABLE" : "NOT ENOUGH DATA"}\n\n${s.finding}\n`);
    await expect(reportMain(["--bogus"])).rejects.toThrow(/unknown argument '--bogus'/);
    await expect(reportMain(["--url", "http://127.0.0.1:1", "--window", "1h"])).rejects.toThrow(/--window is for reports from the control plane's history/);
    await expect(reportMain(["--interval", "60s"])).rejects.toThrow(/--interval goes with --url/);
    await expect(reportMain(["--format", "pdf"])).rejects.toThrow(/--format: expected text, md, html, json/);
    // nothing listens there: the error says where it looked
    await expect(reportMain(["--url", "http://127.0.0.1:1", "--interval", "1s"])).rejects.toThrow(/^cannot reach http:\/\/127\.0\.0\.1:1\/_memdiag \(connect ECONNREFUSED/);
    await expect(reportMain(["--control-plane", "http://127.0.0.1:1"])).rejects.toThrow(/cannot reach the control plane at http:\/\/127\.0\.0\.1:1/);
  });

  test("the HTML report opens offline in Chromium with every chart drawn", async () => {
    const html = (await api(`/api/report?worker=${encodeURIComponent(leakKey)}&from=${from}&to=${to}&format=html`)).body as string;
    const file = path.join(tempDir(), "report.html");
    fs.writeFileSync(file, html);
    const hp: HeadlessPage = await openPage({ width: 900, height: 1200 });
    try {
      const requests: string[] = [];
      await hp.ctx.route("**/*", (route) => {
        const u = route.request().url();
        if (u.startsWith("file://")) return route.continue();
        requests.push(u);
        return route.abort();
      });
      await hp.page.goto(`file://${file}`);
      expect(await hp.page.locator("h1").textContent()).toBe("Memory report: growth");
      for (const s of leakReport.steps) expect(await hp.page.locator(`#step-${s.id}`).getAttribute("data-verdict")).toBe(s.verdict);
      const ink = await inkPerChart(hp.page);
      console.log(`charts: ${JSON.stringify(ink)}`);
      // system, allocator and owner lines, size-class bars, the flame graph: each draws something
      expect(ink.map((c) => c.cls)).toEqual(["chart lines", "chart lines", "chart lines", "chart bars", "chart flame"]);
      for (const c of ink) expect(c.ink).toBeGreaterThan(2000);
      expect(await hp.page.locator("svg.flame g.frame").count()).toBeGreaterThan(5);
      const shot = await hp.page.screenshot({ fullPage: true });
      expect(shot.length).toBeGreaterThan(20000);
      expect(requests).toEqual([]);
      expect(hp.pageErrors).toEqual([]);
    } finally {
      await hp.close();
    }
  });

  test("web console: the Report view builds the selected worker's report with its charts", async () => {
    const hp = await openPage();
    try {
      await hp.page.goto(cp.base + "/");
      await hp.page.click(`#workers tr:has-text("${leak.workerPids()[0]}")`);
      await hp.page.selectOption("#rp-window", "10m");
      await hp.page.waitForSelector("#rp-build:not([disabled])");
      await hp.page.click("#rp-build");
      await hp.page.waitForSelector("#rp-frame:not([hidden])", { timeout: 30000 });
      const frame = hp.page.frameLocator("#rp-frame");
      await frame.locator("h1").waitFor();
      expect(await frame.locator("h1").textContent()).toBe("Memory report: growth");
      expect(await frame.locator("#step-owner").getAttribute("data-verdict")).toBe("grew");
      expect(await frame.locator("#step-owner .finding").textContent()).toMatch(/unrooted pools held by ngx_http_leaky_upstream_module\.so/);
      const f = hp.page.frames().find((x) => x !== hp.page.mainFrame())!;
      const ink = await inkPerChart(f);
      expect(ink.length).toBeGreaterThanOrEqual(4);
      for (const c of ink) expect(c.ink).toBeGreaterThan(2000);
      expect(await hp.page.locator("#rp-status").textContent()).toMatch(/: growth · built /);
      // the downloads: Markdown through the page's own fetch, the same report
      const [dl] = await Promise.all([hp.page.waitForEvent("download"), hp.page.click("#rp-dl-md")]);
      const md = fs.readFileSync((await dl.path())!, "utf8");
      expect(md.startsWith("# Memory report: growth")).toBe(true);
      expect(hp.pageErrors).toEqual([]);
    } finally {
      await hp.close();
    }
  });

  test("memdiag report --url: two deep snapshots of the worker, the difference names the fixture's K new pools", async () => {
    const K = 40;
    const before = await app(leak, "/leaky/status");
    let after: any;
    const src = new LiveSource({
      url: `http://127.0.0.1:${leak.memdiagPort}`,
      interval_s: 5,
      // between the two snapshots: exactly K leaked updates, then the interval
      sleep: async (ms) => {
        for (let i = 0; i < K; i++) await app(leak, "/leaky/update");
        after = await app(leak, "/leaky/status");
        await sleep(ms);
      },
    });
    const r = buildReport(await src.input());
    console.log(`live: ${r.summary}\n${r.steps.map((s) => `${s.id} [${s.verdict}] ${s.finding}`).join("\n")}`);
    expect(after.live_pools - before.live_pools).toBe(K);
    expect(r).toMatchObject({ mode: "live", basis: "two snapshots", snapshots: 2, deep_snapshots: 2, worker: { pid: leak.workerPids()[0] } });
    expect(step(r, "owner").verdict).toBe("grew");
    expect(step(r, "owner").finding).toContain(`${before.live_pools} → ${after.live_pools} pools (+${K})`);
    expect(step(r, "evidence").finding).toContain(`+${K} since the window's start`);
    expect(step(r, "code").finding).toContain(`+${fmtBytes(K * LEAKY_TABLE_SIZE)} (${K} allocations between two fetches) at malloc ← ngx_alloc`);
    expect(leak.errors()).toEqual([]);
    expect(clean.errors()).toEqual([]);
  });
});
