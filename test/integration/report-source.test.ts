/**
 * The report's input from a real SQLite store (control-plane/src/report/source.ts): which worker
 * an instance report is about, the other workers' lines, the window within a worker's life, and
 * which stored call-path fetches stand for the window's start and end. Snapshots are schema-valid
 * (test/fixtures/snapshots.ts) with numbers the test chooses.
 */
import * as path from "path";
import { Store } from "../../control-plane/src/store";
import { CallpathStore } from "../../control-plane/src/callpaths";
import { summarize } from "../../control-plane/src/summary";
import { reportInputFromStore } from "../../control-plane/src/report/source";
import { buildReport } from "../../control-plane/src/report/build";
import { HttpError } from "../../control-plane/src/params";
import { buildSnapshot, identityOf } from "../fixtures/snapshots";
import { tempDir } from "../harness/control-plane";

const MB = 1 << 20;
const PER_POOL = 16384 + 300 * 1024;

describe("report input from the store", () => {
  const store = new Store(path.join(tempDir(), "r.db"));
  const cps = new CallpathStore(store.db);
  const t0 = 1_764_300_000;
  const start = t0 - 3600;
  /** 10 min of snapshots every 10 s; `leak` pools per snapshot in an unrooted group */
  const feed = (pid: number, leak: number, first = t0) => {
    const w = store.helloWorker(identityOf({ pid, worker_start: start, instance: "gw" }), t0);
    const items = [];
    for (let i = 0; first + i * 10 <= t0 + 600; i++) {
      const time = first + i * 10, n = 1 + i * leak;
      const s = summarize(buildSnapshot({ pid, instance: "gw", worker_start: start, seq: i + 1, time, deep: true, rss_bytes: 60 * MB + n * PER_POOL, glibc_in_use_bytes: 20 * MB + n * PER_POOL, glibc_heap_bytes: 24 * MB + n * PER_POOL,
        unrooted: [{ signature: `g${pid}`, owner: "ngx_x_module.so (.bss+0x10)", pools: n, block_bytes: n * 16384, large_blocks: n, large_bytes: n * 300 * 1024 }] }));
      items.push({ id: store.allocateId(), worker: w.id, seq: i + 1, time, received: time, deep: true, rss_bytes: 60 * MB + n * PER_POOL, metrics: s.metrics, unrooted: s.unrooted, full: Buffer.alloc(0) });
    }
    store.insertBatch(items);
    return w;
  };
  const leaky = feed(101, 1);
  const clean = feed(102, 0);
  const young = feed(103, 0, t0 + 500);
  afterAll(() => store.close());

  test("an instance report is about its fastest-growing worker and lists the others with their RSS", () => {
    const { input, worker } = reportInputFromStore(store, cps, { instance: "gw", window_s: 600 }, {}, t0 + 601);
    expect(worker.key).toBe(leaky.key);
    expect(input.window).toEqual({ from: t0, to: t0 + 600, seconds: 600 });
    expect(input.snapshots).toHaveLength(61);
    expect(input.others!.map((o) => o.key).sort()).toEqual([clean.key, young.key].sort());
    const c = input.others!.find((o) => o.key === clean.key)!;
    expect(c).toMatchObject({ pid: 102, rss_bytes: 60 * MB + PER_POOL, rss_delta: 0 });
    const r = buildReport(input);
    expect(r.steps.find((s) => s.id === "owner")!.finding).toContain("1 → 61 pools (+60)");
  });

  test("a worker by pid; a worker younger than the window is reported over its life", () => {
    const { input } = reportInputFromStore(store, cps, { worker: "103", window_s: 3600 }, {}, t0 + 601);
    expect(input.worker.pid).toBe(103);
    expect(input.window).toEqual({ from: t0 + 500, to: t0 + 600, seconds: 100 });
    expect(() => reportInputFromStore(store, cps, { worker: "999", window_s: 60 }, {})).toThrow(HttpError);
    expect(() => reportInputFromStore(store, cps, { instance: "nope", window_s: 60 }, {})).toThrow(/instance 'nope' not found/);
  });

  test("call paths: the last fetch before the window stands for its start, the latest in it for its end", () => {
    const fetch = (time: number, bytes: number) => cps.add({ worker: leaky.key, time, pid: 101, paths_total: 1, est_bytes_total: bytes, sampler: {}, paths: [] });
    fetch(t0 - 100, 1);
    const before = fetch(t0 - 10, 2);
    fetch(t0 + 100, 3);
    const end = fetch(t0 + 590, 4);
    fetch(t0 + 900, 5); // after the window (beyond the minute of slack)
    const { input } = reportInputFromStore(store, cps, { worker: leaky.key, window_s: 600 }, {}, t0 + 601);
    expect(input.callpaths!.first!.id).toBe(before.id);
    expect(input.callpaths!.last!.id).toBe(end.id);
  });
});
