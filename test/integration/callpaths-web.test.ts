/**
 * The web console's "Call paths" panel in headless Chromium (playwright-core,
 * /usr/bin/chromium) against a real control plane fed by a real nginx worker
 * with the leak fixture: arm from the page, fetch, flame graph, diff, folded
 * download. Ground truth: the fixture's /leaky/status (its live 300 KB tables).
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Page } from "playwright-core";
import { startCP, RunningCP } from "../harness/control-plane";
import { HeadlessPage, openPage } from "../harness/browser";
import { Nginx, httpGet } from "../harness/nginx";
import { LEAKY_LOCATIONS, LEAKY_TABLE_SIZE, ensureSampler, leakyLoadModule } from "../harness/fixtures";
import { ROOT } from "../../control-plane/src/config-file";

const SCREENSHOT = path.join(os.tmpdir(), "memdiag-callpaths-web.png");

async function leaky(ngx: Nginx, p: string): Promise<any> {
  const r = await httpGet(ngx.appPort, p);
  expect(r.status).toBe(200);
  return JSON.parse(r.body);
}

describe("web console: call paths panel", () => {
  let cp: RunningCP;
  let ngx: Nginx;
  let browser: HeadlessPage | undefined;
  let page: Page;

  beforeAll(async () => {
    ensureSampler();
    cp = await startCP({ staticDir: path.join(ROOT, "control-plane", "web") });
    ngx = new Nginx({ workers: 1, main: leakyLoadModule(), appLocations: LEAKY_LOCATIONS, agent: { control_plane_url: `${cp.ws}/ingest`, interval_s: 1 } });
    await ngx.start();
    browser = await openPage();
    page = browser.page;
  });

  afterAll(async () => {
    await browser?.close();
    await ngx?.stop();
    await cp?.stop();
    if (cp) fs.rmSync(cp.dir, { recursive: true, force: true });
  });

  test("arm, fetch: flame graph of outstanding bytes; diff: the leak's growth in red; folded download", async () => {
    const pid = ngx.workerPids()[0];
    await page.goto(cp.base + "/");
    await page.waitForSelector(`#workers tr:has-text("${pid}")`);
    await page.click(`#workers tr:has-text("${pid}")`);
    await page.waitForFunction(() => !(document.getElementById("cp-arm") as HTMLButtonElement).disabled);

    // fetch before arming: the page explains how to arm
    await page.click("#cp-fetch");
    await page.waitForFunction(() => /never armed/.test(document.getElementById("cp-status")!.textContent || ""));
    expect(await page.textContent("#cp-status")).toContain("sampler=arm");

    await page.selectOption("#cp-rate", "1");
    await page.click("#cp-arm");
    await page.waitForFunction(() => /^armed/.test(document.getElementById("cp-status")!.textContent || ""));

    await leaky(ngx, "/leaky/reset");
    const N = 12;
    for (let i = 0; i < N; i++) await leaky(ngx, "/leaky/update-leak");
    await page.click("#cp-fetch");
    await page.waitForSelector("#cp-flame svg.flame");
    let truth = await leaky(ngx, "/leaky/status");
    expect(truth.tables).toHaveLength(N);
    // the static helper that allocates the tables, named by the control plane: its frame's width = the live tables
    const helperBytes = async (attr: string) =>
      page.$$eval(`#cp-flame g[data-name^="ngx_http_leaky_upstream_build_table"]`, (gs, a) => gs.map((g) => Number((g as HTMLElement).dataset[a])), attr);
    expect(await helperBytes("bytes")).toEqual([truth.tables.length * LEAKY_TABLE_SIZE]);
    // callers above callees: the update function sits above the helper
    const depth = (sel: string) => page.$eval(sel, (g) => Number(/,(\d+(?:\.\d+)?)\)/.exec(g.getAttribute("transform")!)![1]));
    expect(await depth(`#cp-flame g[data-name^="ngx_http_leaky_upstream_update"]`)).toBeLessThan(await depth(`#cp-flame g[data-name^="ngx_http_leaky_upstream_build_table"]`));

    // folded download of this fetch
    const href = await page.getAttribute("#cp-download", "href");
    expect(href).toMatch(/format=folded$/);
    const folded: string = await page.evaluate((h) => fetch(h!).then((r) => r.text()), href);
    const lines = folded.trim().split("\n");
    for (const l of lines) expect(l).toMatch(/^[^ ;]+(;[^ ;]+)* \d+$/);
    expect(lines.some((l) => l.includes("ngx_http_leaky_upstream_build_table") && l.endsWith(`;malloc ${N * LEAKY_TABLE_SIZE}`))).toBe(true);

    // more leaks, another fetch, diff A → B: the helper grew by exactly M tables and is red
    const M = 8;
    for (let i = 0; i < M; i++) await leaky(ngx, "/leaky/update-leak");
    truth = await leaky(ngx, "/leaky/status");
    expect(truth.tables).toHaveLength(N + M);
    await page.click("#cp-fetch");
    await page.waitForFunction(() => (document.getElementById("cp-a") as HTMLSelectElement).options.length >= 2);
    await page.click("#cp-diff");
    await page.waitForFunction(() => /^diff/.test(document.getElementById("cp-status")!.textContent || ""));
    expect(await helperBytes("delta")).toEqual([M * LEAKY_TABLE_SIZE]);
    expect(await helperBytes("bytes")).toEqual([(N + M) * LEAKY_TABLE_SIZE]);
    const fill = await page.$eval(`#cp-flame g[data-name^="ngx_http_leaky_upstream_build_table"] rect`, (r) => r.getAttribute("fill"));
    expect(fill).toMatch(/^hsl\(0,/);
    expect(await page.getAttribute("#cp-download", "href")).toMatch(/\/callpaths\/diff\?a=\d+&b=\d+&format=folded$/);

    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    await page.click("#cp-disarm");
    await page.waitForFunction(() => /^disarmed/.test(document.getElementById("cp-status")!.textContent || ""));
    expect(browser!.pageErrors).toEqual([]);
    await leaky(ngx, "/leaky/reset");
  });
});
