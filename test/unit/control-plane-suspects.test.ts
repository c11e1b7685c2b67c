import { findSuspects, WorkerWindow } from "../../control-plane/src/suspects";
import { summarize } from "../../control-plane/src/summary";
import { buildSnapshot, defaultSizeClasses } from "../fixtures/snapshots";

const MB = 1 << 20;
const T0 = 1_764_150_000;
const OWNER = "ngx_http_x_module.so (.bss+0x40)";
const LARGE = 300_000; // one 256–512 KB block per leaked pool

/** worker snapshots every 10 s for 10 min; the leak adds `perStep` pools each deep snapshot (every 30 s) */
type Group = { signature: string; owner: string; pools: number; block_bytes: number; large_blocks: number; large_bytes: number; cleanups?: string[] };
function leakingWorker(
  perStep: number,
  noise = 0,
  /** rewrite the deep snapshot's unrooted groups (index i of the 10 s snapshot) */
  reshape?: (i: number, groups: Group[]) => Group[],
): { w: WorkerWindow; pools: number[]; times: number[] } {
  const snaps: WorkerWindow["snapshots"] = [];
  const pools: number[] = [], times: number[] = [];
  for (let i = 0; i <= 60; i++) {
    const time = T0 + i * 10;
    const deep = i % 3 === 0;
    const n = 1 + Math.floor(i / 3) * perStep;
    const wobble = noise ? Math.round(noise * Math.sin(i * 1.7)) : 0;
    const leakBytes = n * (16384 + LARGE);
    const sc = defaultSizeClasses().map((c) => (c.min_bytes === 262144 ? { ...c, chunks: c.chunks + n, bytes: c.bytes + n * LARGE } : c));
    const s = buildSnapshot({
      seq: i + 1, time, deep, rss_bytes: 60 * MB + leakBytes + wobble, glibc_in_use_bytes: 20 * MB + leakBytes + wobble,
      glibc_heap_bytes: 24 * MB + leakBytes, anon_bytes: 50 * MB + leakBytes + wobble,
      unrooted: (reshape ?? ((_i: number, g: Group[]) => g))(i, [
        { signature: "leak", owner: OWNER, pools: n, block_bytes: n * 16384, large_blocks: n, large_bytes: n * LARGE, cleanups: ["ngx_x_cleanup"] },
        { signature: "steady", owner: "lua", pools: 3, block_bytes: 3 * 4096, large_blocks: 0, large_bytes: 0 },
      ]),
      size_classes: sc,
    });
    const sum = summarize(s);
    snaps.push({ time, deep: sum.deep, metrics: sum.metrics, unrooted: sum.unrooted });
    if (deep) { pools.push(n); times.push(time); }
  }
  return { w: { worker: "inst/100/1", instance: "inst", snapshots: snaps }, pools, times };
}

describe("leak suspects", () => {
  test("a growing unrooted group is the top suspect with the slope and R² of the fed numbers", () => {
    const { w, pools, times } = leakingWorker(2, 3 * MB);
    const s = findSuspects([w], 600);
    expect(s.length).toBeGreaterThanOrEqual(1);
    const top = s[0];
    expect(top.metric).toBe("pool.unrooted.leak.bytes");
    expect(top.owner).toBe(OWNER);
    expect(top.subject).toBe("unrooted pools (create size 16384, cleanups: ngx_x_cleanup)");
    // ground truth: pools grow by 2 per 30 s, each pool is 16384 + 300000 bytes → exact line
    const perPool = 16384 + LARGE;
    expect(top.growth_bytes_per_min).toBeCloseTo(4 * perPool, 6);
    expect(top.r2).toBeCloseTo(1, 9);
    expect(top.delta_count).toBe(pools[pools.length - 1] - pools[0]);
    expect(top.delta_bytes).toBe((pools[pools.length - 1] - pools[0]) * perPool);
    expect(top.monotonic_ratio).toBe(1);
    expect(times[times.length - 1] - times[0]).toBe(600);
    expect(top.evidence).toBe(
      `unrooted pools held by ${OWNER}: +40 pools, +12.1 MB in 10 min (1.2 MB/min, R² 1.00); 256–512 KB chunks +40`,
    );
    // the steady group, and RSS / glibc / size class that the leak explains, are not separate suspects
    expect(s.map((x) => x.metric)).not.toContain("pool.unrooted.steady.bytes");
    expect(s.map((x) => x.metric)).not.toContain("system.rss_bytes");
    expect(s.map((x) => x.metric)).not.toContain("glibc.in_use_bytes");
  });

  test("a noisy but bounded workload gives no suspect", () => {
    const snaps: WorkerWindow["snapshots"] = [];
    for (let i = 0; i <= 60; i++) {
      // keepalive connections opening/closing: request pools and RSS oscillate; a shm dict fills then stays full
      const osc = Math.sin(i / 2) * 0.5 + Math.sin(i * 1.3) * 0.5;
      const s = buildSnapshot({
        seq: i + 1, time: T0 + i * 10, rss_bytes: Math.round(80 * MB + 25 * MB * osc), anon_bytes: Math.round(60 * MB + 25 * MB * osc),
        glibc_in_use_bytes: Math.round(30 * MB + 20 * MB * osc), request_pools: 50 + Math.round(40 * osc), request_pool_bytes: (50 + Math.round(40 * osc)) * 65536,
        shm: [{ name: "cache", size_bytes: 64 * MB, used_bytes: Math.min(i * 4, 60) * MB }],
        gc_bytes: Math.round(8 * MB + 6 * MB * Math.sin(i / 5)),
      });
      const sum = summarize(s);
      snaps.push({ time: T0 + i * 10, deep: sum.deep, metrics: sum.metrics, unrooted: sum.unrooted });
    }
    expect(findSuspects([{ worker: "w", instance: "i", snapshots: snaps }], 600)).toEqual([]);
  });

  test("a leak in LuaJIT without pools is reported under lua", () => {
    const snaps: WorkerWindow["snapshots"] = [];
    for (let i = 0; i <= 30; i++) {
      const sum = summarize(buildSnapshot({ seq: i + 1, time: T0 + i * 20, gc_bytes: 5 * MB + i * 512 * 1024, rss_bytes: 60 * MB + i * 512 * 1024 }));
      snaps.push({ time: T0 + i * 20, deep: false, metrics: sum.metrics, unrooted: {} });
    }
    const s = findSuspects([{ worker: "w", instance: "i", snapshots: snaps }], 600);
    expect(s.map((x) => x.metric)).toEqual(["luajit.gc_bytes"]);
    expect(s[0].owner).toBe("lua");
    expect(s[0].growth_bytes_per_min).toBeCloseTo(1.5 * MB, 3);
  });

  test("a leak whose pools the agent splits across changing signatures is reported once, per owner", () => {
    const snaps: WorkerWindow["snapshots"] = [];
    let total = 0;
    for (let i = 0; i <= 60; i++) {
      const n = 1 + i * 2; // leaked pools so far
      // the scan puts them under 1–3 signatures that change from scan to scan
      const k = 1 + (i % 3);
      const groups = Array.from({ length: k }, (_, j) => {
        const pools = j < k - 1 ? Math.floor(n / k) : n - Math.floor(n / k) * (k - 1);
        return { signature: `s${(i + j) % 5}`, owner: OWNER, pools, block_bytes: pools * 16384, large_blocks: pools, large_bytes: pools * LARGE };
      });
      total = n;
      const sum = summarize(buildSnapshot({ seq: i + 1, time: T0 + i * 10, deep: true, unrooted: groups, size_classes: defaultSizeClasses() }));
      snaps.push({ time: T0 + i * 10, deep: true, metrics: sum.metrics, unrooted: sum.unrooted });
    }
    const s = findSuspects([{ worker: "w", instance: "i", snapshots: snaps }], 600);
    expect(s.map((x) => x.metric)).toEqual([`pool.unrooted_owner.${OWNER}.bytes`]);
    expect(s[0].owner).toBe(OWNER);
    expect(s[0].subject).toBe("unrooted pools (all groups of this owner)");
    expect(s[0].delta_count).toBe(total - 1);
    expect(s[0].growth_bytes_per_min).toBeCloseTo(12 * (16384 + LARGE), 4);
    expect(s[0].evidence).toMatch(new RegExp(`^unrooted pools held by ${OWNER.replace(/[().+]/g, "\\$&")}: \\+120 pools, \\+36\\.2 MB in 10 min`));
  });

  // the agent sometimes files the leaking group for a scan or two under another signature
  // with owner "unreferenced" (pools created while a sliced scan ran): the group is missing
  // from those deep snapshots, which must not count as 0 pools
  const flip = (at: Set<number>) => (i: number, g: Group[]): Group[] =>
    at.has(i) ? [{ ...g[0], signature: `flip${i}`, owner: "unreferenced", cleanups: [] }, g[1]] : g;

  test("a group missing from one or two deep snapshots (a flip to another signature) is still the top suspect", () => {
    // deep snapshots are i = 0, 3, …, 60: a one-scan gap at 15, a two-scan gap at 36 and 39, none at the ends
    const gaps = new Set([15, 36, 39]);
    const { w, pools } = leakingWorker(2, 3 * MB, flip(gaps));
    const s = findSuspects([w], 600);
    expect(s.length).toBeGreaterThanOrEqual(1);
    const top = s[0];
    expect(top.metric).toBe("pool.unrooted.leak.bytes");
    expect(top.owner).toBe(OWNER);
    // the points that remain lie on the same exact line as without gaps
    const perPool = 16384 + LARGE;
    expect(top.growth_bytes_per_min).toBeCloseTo(4 * perPool, 6);
    expect(top.r2).toBeCloseTo(1, 9);
    expect(top.monotonic_ratio).toBe(1);
    expect(top.delta_count).toBe(pools[pools.length - 1] - pools[0]);
    // the flipped groups exist for one or two scans: never suspects
    expect(s.filter((x) => x.metric.startsWith("pool.unrooted.flip"))).toEqual([]);
    expect(s.filter((x) => x.owner === "unreferenced")).toEqual([]);
    // and glibc does not take the top place
    expect(s.map((x) => x.metric)).not.toContain("glibc.mmap_bytes");
  });

  test("with a gap longer than two scans the group counts as 0 there (no suspect from a broken series)", () => {
    const gaps = new Set([27, 30, 33]);
    const s = findSuspects([leakingWorker(2, 0, flip(gaps)).w], 600);
    expect(s.map((x) => x.metric)).not.toContain("pool.unrooted.leak.bytes");
  });

  test("a group that disappears for good (its pools destroyed) is not a suspect", () => {
    // grows for 8 of the 10 minutes, then the pools are destroyed: the group is in no later deep snapshot
    for (const goneFrom of [48, 57, 60]) {
      const { w } = leakingWorker(2, 0, (i, g) => (i >= goneFrom ? [g[1]] : g));
      const s = findSuspects([w], 600);
      expect({ goneFrom, metrics: s.map((x) => x.metric).filter((m) => m.startsWith("pool.unrooted")) }).toEqual({ goneFrom, metrics: [] });
    }
  });
});
