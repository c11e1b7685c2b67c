/** The terminal console's pure parts: text layout, the layer breakdown, one frame within 80×24. */
import { renderFrame, layerRows, Model } from "../../control-plane/src/console/render";
import { parseWindow, wrap, renderLine, seg, parseFlags } from "../../control-plane/src/console/text";
import { signedBytes } from "../../control-plane/src/format";
import { DiffRow, Suspect, WorkerInfo } from "../../control-plane/src/protocol";

const MB = 1024 * 1024;

function row(key: string, section: DiffRow["section"], a: number, b: number, ac?: number, bc?: number): DiffRow {
  const r: DiffRow = { key, label: key, section, a_bytes: a, b_bytes: b, delta_bytes: b - a, delta_ratio: a ? (b - a) / a : null };
  if (ac !== undefined) Object.assign(r, { a_count: ac, b_count: bc, delta_count: bc! - ac });
  return r;
}

function worker(pid: number, state: "live" | "gone" = "live"): WorkerInfo {
  return { key: `gw:/p//${pid}/1`, instance: "a-rather-long-host-name:/usr/local/openresty/nginx/", host: "h", pid, generation: 1, worker_start: 1, first_seen: 1, last_seen: 2, state, snapshots: 1234, rss_bytes: 812 * MB };
}

const suspect: Suspect = {
  subject: "unrooted pools (create size 16384, cleanups: –)",
  owner: "ngx_http_x_module.so (.bss+0x40)",
  growth_bytes_per_min: 1.1 * MB,
  r2: 0.99,
  evidence: "unrooted pools held by ngx_http_x_module.so (.bss+0x40): +38 pools, +11.2 MB in 10 min (1.1 MB/min, R² 0.99); 256–512 KB chunks +38",
  metric: "pool.unrooted.abc.bytes",
  worker: "gw:/p//101/1",
  instance: "gw",
  window_s: 600,
  delta_bytes: 11.2 * MB,
  delta_count: 38,
  monotonic_ratio: 1,
};

test("parseWindow, signedBytes, parseFlags", () => {
  expect(parseWindow("10m")).toBe(600);
  expect(parseWindow("90s")).toBe(90);
  expect(parseWindow("1h")).toBe(3600);
  expect(parseWindow("300")).toBe(300);
  expect(() => parseWindow("ten")).toThrow(/--window/);
  expect(signedBytes(0)).toBe("0 B");
  expect(signedBytes(1536)).toBe("+1.5 KB");
  expect(signedBytes(-2 * MB)).toBe("-2.0 MB");
  expect(parseFlags(["--once", "--url=http://x", "--window", "5m"], { once: "bool", url: "string", window: "string" })).toEqual({ once: true, url: "http://x", window: "5m" });
  expect(() => parseFlags(["--nope"], { once: "bool" })).toThrow(/unknown argument '--nope'/);
  expect(() => parseFlags(["--url"], { url: "string" })).toThrow(/needs a value/);
});

test("wrap and renderLine keep to the width; colour codes do not count", () => {
  const lines = wrap(suspect.evidence, 40, 2);
  expect(lines.length).toBe(2);
  for (const l of lines) expect([...l].length).toBeLessThanOrEqual(40);
  expect(lines[1]).toMatch(/…$/);
  const out = renderLine([seg("abc", "red"), seg("x".repeat(100))], 20, true);
  expect(out.replace(/\x1b\[[0-9;]*m/g, "")).toHaveLength(20);
  expect(out).toContain("\x1b[31mabc\x1b[0m");
});

test("layerRows: now, since start and over the window, summed per layer", () => {
  const start = [row("system.rss_bytes", "system", 100 * MB, 150 * MB), row("shm.a", "shm", 1 * MB, 2 * MB), row("shm.b", "shm", 1 * MB, 1 * MB)];
  const win = [
    row("system.rss_bytes", "system", 140 * MB, 150 * MB),
    row("shm.a", "shm", 2 * MB, 2 * MB),
    row("shm.b", "shm", 1 * MB, 1 * MB),
    row("pool.unrooted.s1", "pool", 1 * MB, 5 * MB, 3, 13),
    row("pool.unrooted.s2", "pool", 0, 1 * MB, 0, 1),
    row("region.code./usr/sbin/nginx", "region", 5 * MB, 5 * MB),
  ];
  const rows = layerRows(start, win);
  expect(rows.map((r) => r.label)).toEqual(["RSS", "shm zones used", "unrooted pools"]);
  expect(rows[0]).toMatchObject({ now: 150 * MB, since_start: 50 * MB, window: 10 * MB });
  expect(rows[1]).toMatchObject({ now: 3 * MB, since_start: 1 * MB, window: 0 });
  // no deep data on the since-start side: "–", not a made-up zero
  expect(rows[2]).toMatchObject({ now: 6 * MB, since_start: null, window: 5 * MB, count: 14, count_window: 11 });
});

test("a busy frame fits 80×24: the selected worker stays visible, suspects take what is left", () => {
  const workers = [101, 102, 103, 104, 105, 106, 107].map((p) => worker(p));
  workers.push(worker(99, "gone"));
  const m: Model = {
    url: "http://127.0.0.1:9146",
    window_s: 600,
    now: 1795690000,
    live: true,
    workers,
    selected: "gw:/p//107/1",
    rss_change: { "gw:/p//107/1": 11 * MB },
    layers: layerRows(undefined, [
      row("system.rss_bytes", "system", 800 * MB, 812 * MB),
      row("glibc.arena_bytes", "glibc", 10 * MB, 11 * MB),
      row("glibc.mmap_bytes", "glibc", 700 * MB, 711 * MB, 2000, 2038),
      row("glibc.in_use_bytes", "glibc", 700 * MB, 711 * MB),
      row("luajit.gc_bytes", "luajit", 3 * MB, 3 * MB),
      row("pool.connection", "pool", MB, MB, 100, 90),
      row("pool.unrooted.abc", "pool", 600 * MB, 611 * MB, 2202, 2240),
    ]),
    suspects: [suspect, { ...suspect, subject: "glibc mmapped chunks", metric: "glibc.mmap_bytes", worker: "gw:/p//102/1" }, suspect],
    status: "deep scan requested from pid 107…",
  };
  const frame = renderFrame(m, { width: 80, height: 24, color: false, keys: true });
  const lines = frame.replace(/\n$/, "").split("\n");
  expect(lines.length).toBeLessThanOrEqual(24);
  for (const l of lines) expect([...l].length).toBeLessThanOrEqual(80);
  expect(lines.some((l) => l.startsWith("▶ ") && l.includes(" 107 "))).toBe(true);
  expect(frame).toMatch(/… \d+ more \(7 live\)/);
  expect(frame).toContain("LAYERS pid 107");
  expect(frame).toMatch(/unrooted pools \(2240 \+38\)/);
  expect(frame).toMatch(/^1\. unrooted pools \(create size 16384, cleanups: –\) · pid 101$/m);
  expect(lines[lines.length - 1]).toMatch(/q quit/);
  expect(lines[lines.length - 2]).toBe("deep scan requested from pid 107…");
});

test("no workers: the frame says what to do", () => {
  const m: Model = { url: "http://127.0.0.1:9146", window_s: 600, now: 1795690000, live: false, workers: [], rss_change: {}, layers: [], suspects: [] };
  const frame = renderFrame(m, { width: 80, height: 24, color: false, keys: false });
  expect(frame).toMatch(/no workers yet: set control_plane\.push/);
  expect(frame).toMatch(/reconnecting/);
  expect(frame).toMatch(/none: nothing grows beyond noise/);
});

test("snapshot rows: regions classified a while ago say how old they are; fresh ones say nothing", () => {
  const { snapshotRows } = require("../../control-plane/src/console/snapshot");
  const base = { seq: 1, time: 1_700_000_000, system: { rss_bytes: 1 << 20, regions: [{ class: "glibc_heap", bytes: 4096, rss_bytes: 4096, mappings: 1 }] } };
  const rows = snapshotRows([{ ...base, system: { ...base.system, regions_age_s: 3.2 } }, { ...base, system: { ...base.system, regions_age_s: 0 } }]);
  const head = rows.find((r: { label: string }) => r.label === "regions (RSS)");
  expect(head.cells).toEqual(["as of 3 s ago", ""]);
});
