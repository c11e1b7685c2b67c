/**
 * The web console end to end: real headless Chromium (playwright-core, Debian's
 * /usr/bin/chromium) against a real control plane (real HTTP, real SQLite file)
 * fed over real websockets by simulated agents speaking the wire protocol.
 *
 * Ground truth is what the simulated agents sent: the leaking worker's unrooted
 * group grows by one pool per snapshot, the steady worker's does not.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as http from "http";
import { Page } from "playwright-core";
import { startCP, RunningCP } from "../harness/control-plane";
import { HeadlessPage, openPage } from "../harness/browser";
import { SimAgent, simSnapshot, LEAK_OWNER } from "../harness/sim-agent";
import { ROOT } from "../../control-plane/src/config-file";
import { Nginx } from "../harness/nginx";
import { leakyLoadModule, LEAKY_LOCATIONS } from "../harness/fixtures";

const SCREENSHOT = path.join(os.tmpdir(), "memdiag-console-web.png");
const SCREENSHOT_REAL = path.join(os.tmpdir(), "memdiag-console-web-nginx.png");
const LEAK_PID = 4101;

const STEADY_PID = 4102;

describe("web console in headless Chromium against a real control plane", () => {
  let cp: RunningCP;
  let browser: HeadlessPage | undefined;
  let page: Page;
  const now = Math.floor(Date.now() / 1000);
  const workerStart = now - 700;
  const agents: Record<number, SimAgent> = {};
  const seq: Record<number, number> = { [LEAK_PID]: 0, [STEADY_PID]: 0 };

  /** one snapshot of a worker at time t (the leaking one has `i` pools in its group) */
  const push = async (pid: number, t: number, i: number, replyTo?: string): Promise<void> => {
    seq[pid]++;
    const leaked = pid === LEAK_PID ? 1 + i : 1;
    await agents[pid].send(simSnapshot({ pid, worker_id: pid - LEAK_PID, worker_start: workerStart, seq: seq[pid], time: t, leaked, deep: true, jitter: (i % 3) * 4096 }), replyTo);
  };

  beforeAll(async () => {
    cp = await startCP({ staticDir: path.join(ROOT, "control-plane", "web"), suspectsIntervalMs: 300 });
    for (const pid of [LEAK_PID, STEADY_PID]) {
      agents[pid] = new SimAgent(`${cp.ws}/ingest`, {
        host: "sim", instance: "sim:1:/sim/", pid, worker_id: pid - LEAK_PID, worker_start: workerStart, generation: 1, nginx_version: "1.22.1", agent_version: "0.1.0",
      });
      await agents[pid].connect();
    }
    // history so far: 8 snapshots 10 s apart, 7 minutes ago (too short a span for a verdict yet)
    for (let i = 0; i < 8; i++) for (const pid of [LEAK_PID, STEADY_PID]) await push(pid, now - 420 + i * 7, i);
    browser = await openPage();
    page = browser.page;
  });

  afterAll(async () => {
    await browser?.close();
    for (const a of Object.values(agents)) await a.close();
    await cp?.stop();
    if (cp) fs.rmSync(cp.dir, { recursive: true, force: true });
  });

  test("page loads: both workers, the selected worker's chart, and calm empty states", async () => {
    await page.goto(cp.base + "/");
    await page.waitForSelector(`#workers tr[data-key] >> text=${LEAK_PID}`);
    await page.click(`#workers tr:has-text("${LEAK_PID}")`);
    await page.waitForFunction(() => document.querySelector("#chart")!.getAttribute("data-points") === "8");
    expect(await page.textContent("#workers")).toContain(String(STEADY_PID));
    expect(await page.textContent("#chart-title")).toContain(`pid ${LEAK_PID}`);
    await page.waitForSelector("#conn.conn-up");
    // 50 s of history cannot make a trend over 10 minutes: no suspect, and the page says what to do
    expect(await page.textContent("#suspects")).toMatch(/No suspects/);
    expect(await page.textContent("#diff")).toMatch(/Click two points/);
    expect(await page.$$eval("#legend .item", (els) => els.map((e) => e.textContent!.replace(/\s+/g, " ").trim()))).toEqual(
      expect.arrayContaining([expect.stringMatching(/^RSS \d/), expect.stringMatching(/^glibc heap [\d.]+ MB \+/)]),
    );
  });

  test("a live update arrives over the websocket without a reload", async () => {
    await page.evaluate(() => ((window as unknown as { __noReload: boolean }).__noReload = true));
    // the rest of the window arrives live: 50 more snapshots of each worker
    for (let i = 8; i < 58; i++) for (const pid of [LEAK_PID, STEADY_PID]) await push(pid, now - 420 + i * 7, i);
    await page.waitForFunction(() => document.querySelector("#chart")!.getAttribute("data-points") === "58");
    expect(await page.evaluate(() => (window as unknown as { __noReload?: boolean }).__noReload)).toBe(true);
    // the worker table follows: the leaking worker's RSS changed by +57 pools' worth
    const row = await page.textContent(`#workers tr:has-text("${LEAK_PID}")`);
    expect(row).toMatch(/\+\d+(\.\d)? MB/);
  });

  test("a suspect appears for the growing unrooted group, with its evidence", async () => {
    // suspects are recomputed as the snapshots arrive: wait for the one over all of them
    const s = page.locator(".suspect", { hasText: "+57 pools" }).first();
    await s.waitFor();
    const text = (await s.textContent())!.replace(/\s+/g, " ");
    expect(text).toContain("#1");
    expect(text).toContain(LEAK_OWNER);
    expect(text).toMatch(/\+57 pools/);
    expect(text).toMatch(/R² 1\.00/);
    expect(text).toMatch(/256–512 KB chunks \+57/);
    expect(await page.locator(".suspect", { hasText: `pid ${STEADY_PID}` }).count()).toBe(0);
  });

  test("choosing two points on the chart shows their diff", async () => {
    const box = (await page.locator("#chart .u-over").boundingBox())!;
    // A near the left end, B near the right end of the plot
    await page.mouse.click(box.x + box.width * 0.05, box.y + box.height / 2);
    await page.waitForFunction(() => /A = /.test(document.querySelector("#pick-hint")!.textContent!));
    await page.mouse.click(box.x + box.width * 0.95, box.y + box.height / 2);
    const row = page.locator("#diff tr", { hasText: LEAK_OWNER });
    await row.waitFor();
    const cells = await row.locator("td").allTextContents();
    // label, layer, A, B, Δ bytes, Δ %, Δ count
    expect(cells[1]).toBe("pool");
    expect(cells[4]).toMatch(/^\+\d+(\.\d)? MB$/);
    const dCount = Number(cells[6].replace("+", ""));
    expect(dCount).toBeGreaterThan(40); // ~ the number of snapshots between the two clicks
    // it is ranked first (largest growth) and the size-class histogram shows the same change
    expect(await page.locator("#diff tbody tr").first().textContent()).toContain(LEAK_OWNER);
    const cls = page.locator("#classes tr", { hasText: "256–512 KB" });
    expect((await cls.locator("td").allTextContents())[4]).toBe(`+${dCount}`);
    // the diff the page shows is the API's diff of the two snapshots it picked
    const title = await page.textContent("#diff-title");
    expect(title).toMatch(/→/);
  });

  test("clicking the suspect drills into the pool group: retainer path, cleanups, examples", async () => {
    await page.locator(".suspect").first().click();
    await page.waitForSelector("#group .retainer .hop.root");
    expect(await page.textContent("#group .hop.root")).toBe(LEAK_OWNER);
    expect(await page.locator("#group .hop").allTextContents()).toEqual([LEAK_OWNER, "pool", "pool"]);
    const group = (await page.textContent("#group"))!;
    expect(group).toMatch(/cleanups\s*none registered/);
    expect(group).toMatch(/0x55d0c0a00000/);
    expect(group).toMatch(/ngx_create_pool\(16,384 B\)/);
  });

  test("scan now sends a deep command to the worker and shows its answer", async () => {
    const leak = agents[LEAK_PID];
    const answered = new Promise<void>((resolve) => {
      leak.onCommand = (c) => {
        leak.commandResult(c.id, true);
        void push(LEAK_PID, Date.now() / 1000, 60, c.id).then(resolve);
      };
    });
    await page.click("#scan-now");
    await answered;
    expect(leak.commands.map((c) => c.command)).toEqual(["deep"]);
    await page.waitForFunction(() => /deep scan done at .* \(snapshot \d+\)/.test(document.querySelector("#scan-status")!.textContent!));
    await page.waitForFunction(() => document.querySelector("#chart")!.getAttribute("data-points") === "59");
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(browser!.pageErrors).toEqual([]);
  });
});

/**
 * The same page against the real thing: nginx (2 workers) with the leak fixture and
 * the memdiag agent pushing to the control plane (deep scan every 3 s). Upstream
 * updates go over one keepalive connection, so one worker leaks; the fixture's own
 * /leaky/status (same connection, same worker) is the ground truth.
 */
describe("web console with real nginx, agent push and the leak fixture", () => {
  let cp: RunningCP;
  let ngx: Nginx;
  let browser: HeadlessPage | undefined;
  let page: Page;
  const keep = new http.Agent({ keepAlive: true, maxSockets: 1 });

  const call = (p: string): Promise<any> =>
    new Promise((resolve, reject) => {
      http.get({ host: "127.0.0.1", port: ngx.appPort, path: p, agent: keep }, (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve(JSON.parse(body)));
      }).on("error", reject);
    });

  beforeAll(async () => {
    cp = await startCP({ staticDir: path.join(ROOT, "control-plane", "web"), suspectsIntervalMs: 1000 });
    ngx = new Nginx({
      workers: 2,
      main: leakyLoadModule(),
      http: "leaky_upstream_mode leak;",
      appLocations: LEAKY_LOCATIONS,
      agent: { control_plane_url: `${cp.ws}/ingest`, interval_s: 1, deep_interval_s: 3 },
    });
    await ngx.start();
    browser = await openPage();
    page = browser.page;
  });

  afterAll(async () => {
    keep.destroy();
    await browser?.close();
    await ngx?.stop();
    await cp?.stop();
    if (cp) fs.rmSync(cp.dir, { recursive: true, force: true });
  });

  test("the leaking worker's pool group becomes a suspect, live, and drills down to the fixture's numbers", async () => {
    const { pid } = await call("/leaky/status");
    await page.goto(cp.base + "/?window=1m");
    for (const p of ngx.workerPids()) {
      await page.waitForSelector(`#workers tr:has-text("${p}")`, { timeout: 60000 }).catch(async (e) => {
        const workers = await (await fetch(`${cp.base}/api/workers`)).json();
        const health = await (await fetch(`${cp.base}/api/health`)).json();
        throw new Error(`${e.message}\nworker pids now: ${ngx.workerPids()}\n/api/workers: ${JSON.stringify(workers)}\n/api/health: ${JSON.stringify(health)}\ncontrol plane log:\n${cp.logs.slice(-30).join("\n")}\nnginx error log:\n${ngx.errorLog().split("\n").slice(-40).join("\n")}\n#workers: ${await page.textContent("#workers")}`);
      });
    }
    await page.click(`#workers tr:has-text("${pid}")`);
    await page.waitForFunction(() => Number(document.querySelector("#chart")!.getAttribute("data-points")) > 0);
    const points0 = Number(await page.getAttribute("#chart", "data-points"));

    // upstream updates every 2 s (as in the demo), until the page names the suspect
    let stop = false;
    const driver = (async () => {
      while (!stop) {
        await call("/leaky/update");
        await new Promise((r) => setTimeout(r, 2000));
      }
    })();
    const suspect = page.locator(".suspect", { hasText: "create size 16384" }).first();
    try {
      await suspect.waitFor({ timeout: 150000 });
    } catch (e) {
      await page.screenshot({ path: SCREENSHOT_REAL, fullPage: true });
      const api = await (await fetch(`${cp.base}/api/suspects?window=60`)).json();
      throw new Error(`no pool-group suspect on the page (screenshot ${SCREENSHOT_REAL}); page: ${await page.textContent("#suspects")}; API: ${JSON.stringify(api).slice(0, 2000)}`);
    } finally {
      stop = true;
      await driver;
    }
    // it arrived without a reload, with the chart growing point by point
    expect(Number(await page.getAttribute("#chart", "data-points"))).toBeGreaterThan(points0);
    // (its rank against whole-process series such as RSS is the suspect ranking's business, not the page's)
    expect(await suspect.textContent()).toContain(`pid ${pid}`);
    expect(await suspect.textContent()).toMatch(/256–512 KB chunks \+\d+/);

    // drill-down: the deep scan's group, compared with what the fixture says it holds
    const status = await call("/leaky/status");
    expect(status.pid).toBe(pid);
    await suspect.click();
    await page.waitForSelector("#group dl.kv").catch(async (e) => {
      throw new Error(`${e.message}\n#group: ${await page.textContent("#group")}\nsuspect: ${await suspect.textContent()}`);
    });
    const kv = await page.$$eval("#group dl.kv dt, #group dl.kv dd", (els) => els.map((e) => e.textContent!.trim()));
    const field = (k: string): string => kv[kv.indexOf(k) + 1];
    const pools = Number(field("pools").replace(/,/g, ""));
    // the scan ran before the last few updates: at most live_pools, and most of them
    expect(pools).toBeLessThanOrEqual(status.live_pools);
    expect(pools).toBeGreaterThan(status.live_pools / 2);
    expect(field("created with")).toBe("ngx_create_pool(16,384 B)");
    expect(field("large blocks")).toMatch(/^256–512 KB: \d+/);
    // the owner shown is the suspect's owner, and the retainer path (or "lost") is spelled out
    const owner = (await suspect.locator("b").first().textContent())!;
    expect(field("held by")).toBe(owner);
    expect((await page.textContent("#group .retainer"))!.trim().length).toBeGreaterThan(0);
    if (owner !== "unreferenced") expect(await page.textContent("#group .hop.root")).toBe(owner);
    // scan now: the worker runs a deep scan on command and its snapshot answers it
    await page.click("#scan-now");
    await page.waitForFunction(() => /deep scan (done|failed|timed out)|no answer/.test(document.querySelector("#scan-status")!.textContent!), undefined, { timeout: 150000 });
    expect(await page.textContent("#scan-status")).toMatch(/deep scan done at .* \(snapshot \d+\)/);
    await page.screenshot({ path: SCREENSHOT_REAL, fullPage: true });
    expect(browser!.pageErrors).toEqual([]);
    expect(ngx.errors().filter((l) => !/ngx.sleep\(0\)/.test(l))).toEqual([]);
  }, 240000);
});
