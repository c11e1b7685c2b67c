import { findSuspects, WorkerWindow } from "../../control-plane/src/suspects";
import { DEFAULT_RULES } from "../../control-plane/src/trends";
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

describe("warm-up: a young worker's growth", () => {
  // a worker started at T0, collecting every 2 s (the demo's setting); the window ends at `now`
  const windowAt = (now: number, f: (t: number) => { rss: number; gc?: number; leaked?: number }, start: number | undefined = T0): WorkerWindow => {
    const snaps: WorkerWindow["snapshots"] = [];
    for (let t = T0; t <= now; t += 2) {
      if (t < now - 60) continue;
      const x = f(t - T0);
      const deep = (t - T0) % 6 === 0;
      const leaked = x.leaked ?? 0;
      const s = buildSnapshot({
        seq: (t - T0) / 2 + 1, time: t, deep, rss_bytes: x.rss, anon_bytes: x.rss - 10 * MB, gc_bytes: x.gc ?? 3 * MB,
        unrooted: [{ signature: "leak", owner: OWNER, pools: 1 + leaked, block_bytes: (1 + leaked) * 16384, large_blocks: 1 + leaked, large_bytes: (1 + leaked) * LARGE }],
        size_classes: defaultSizeClasses(),
      });
      const sum = summarize(s);
      snaps.push({ time: t, deep: sum.deep, metrics: sum.metrics, unrooted: sum.unrooted });
    }
    return { worker: "i/1/1", instance: "i", worker_start: start, snapshots: snaps };
  };
  // RSS (KB) of the two workers of a real nginx running the fixture's correct variant, by seconds
  // since the worker started, recorded by suspects-variants.test.ts: ~6 MB in the first 10 s, then
  // ~1.7 MB more over the next minute, ever slower, in steps (LuaJIT arena, JIT code, caches)
  const MEASURED: [number, number][][] = [[[0.1,10464],[2.1,11828],[4.1,13144],[6.1,13692],[8.2,15008],[10.2,15500],[12.2,15520],[14.2,15576],[16.4,15996],[18.4,16056],[20.5,16136],[22.6,16160],[24.7,16152],[26.8,16260],[28.8,16264],[30.9,16288],[33,16252],[35,16264],[37.1,16348],[39.2,16356],[41.3,16312],[43.4,16388],[45.4,16388],[47.4,16404],[49.5,16472],[51.5,16588],[53.6,16684],[55.7,16820],[57.8,16896],[59.8,17024],[61.9,17052],[63.9,17096],[65.9,17112],[67.9,17120],[69.9,17188],[71.9,17192],[73.9,17196],[75.9,17268],[78,17204],[80,17272],[82,17280],[84,17284],[86,17288],[88,17232],[90,17236],[92,17240],[94,17248],[96,17248],[98,17252],[100.1,17256]],[[0.1,10464],[2.1,11460],[4.1,12672],[6.1,13060],[8.1,14056],[10.2,14896],[12.2,15144],[14.2,15304],[16.3,15352],[18.4,15376],[20.4,15460],[22.5,15472],[24.6,15508],[26.6,15544],[28.6,15556],[30.7,15604],[32.8,15700],[35,15708],[37.1,15792],[39.2,15876],[41.2,15888],[43.4,15904],[45.5,15960],[47.6,15992],[49.6,16008],[51.7,16008],[53.7,16020],[55.8,16024],[57.8,16324],[59.8,16428],[61.9,16428],[63.9,16504],[66,16524],[68.1,16500],[70.1,16600],[72.2,16628],[74.2,16676],[76.2,16688],[78.2,16624],[80.2,16628],[82.2,16696],[84.2,16696],[86.2,16640],[88.2,16648],[90.2,16672],[92.2,16720],[94.2,16724],[96.2,16724],[98.3,16664],[100.3,16668]]];
  const measured = (w: number) => (a: number) => {
    const pts = MEASURED[w];
    let v = pts[0][1];
    for (const [t, kb] of pts) if (t <= a + 0.2) v = kb;
    return { rss: v * 1024 };
  };
  const warming = measured(0);

  test("RSS of a real worker warming up is no suspect at any time", () => {
    for (const w of [0, 1]) {
      for (let now = T0 + 20; now <= T0 + 100; now += 10) {
        expect({ w, now: now - T0, s: findSuspects([windowAt(now, measured(w))], 60).map((x) => x.evidence) }).toEqual({ w, now: now - T0, s: [] });
      }
    }
    // the same numbers judged without the warm-up and slow-down rules: a suspect, as users saw in the first minute
    const old = { ...DEFAULT_RULES, warmup_s: 0, min_half_ratio: 0, process_min_ratio: 0 };
    const seen = [0, 1].flatMap((w) => [40, 50, 60, 70, 80, 90].flatMap((a) => findSuspects([windowAt(T0 + a, measured(w))], 60, old)));
    expect(seen.map((x) => x.metric)).toContain("system.rss_bytes");
  });

  test("an unrooted pool group leaking from the start is found within the first minute", () => {
    // one pool per 2 s update (the demo's rate), RSS warming up as above plus the leak
    const f = (a: number) => ({ rss: warming(a).rss + Math.floor(a / 2) * (16384 + LARGE), leaked: Math.floor(a / 2) });
    const s = findSuspects([windowAt(T0 + 45, f)], 60);
    expect(s[0]?.metric).toBe("pool.unrooted.leak.bytes");
    expect(s[0].delta_count).toBe(21); // deep snapshots at 0 s … 42 s: 0 … 21 leaked pools
  });

  // RSS (KB) of a correct-variant worker over 3 minutes (suspects-variants.test.ts run for longer):
  // after the warm-up it still settles, +1.2 MB in its second minute, +0.3 MB in its third
  const SETTLING: [number, number][] = [[0.1,10568],[2.1,12028],[4.1,13376],[6.1,13860],[8.1,14364],[10.2,15080],[12.2,15536],[14.2,15800],[16.3,15868],[18.3,15980],[20.3,16168],[22.3,16212],[24.3,16224],[26.3,16260],[28.3,16296],[30.3,16364],[32.3,16484],[34.4,16592],[36.4,16644],[38.4,16692],[40.4,16788],[42.4,16804],[44.4,16940],[46.4,16968],[48.4,17256],[50.4,17584],[52.4,17596],[54.4,17624],[56.4,17684],[58.4,17632],[60.4,17632],[62.4,17656],[64.5,17952],[66.5,17488],[68.5,17744],[70.5,17744],[72.5,17688],[74.5,17700],[76.5,17700],[78.5,17708],[80.5,17712],[82.5,17740],[84.5,17788],[86.5,17732],[88.5,17740],[90.5,17808],[92.5,18056],[94.5,18232],[96.5,18280],[98.5,18284],[100.6,18288],[102.6,18368],[104.6,18440],[106.6,18472],[108.6,18524],[110.6,18656],[112.6,18660],[114.6,18732],[116.6,18736],[118.6,18760],[120.6,18820],[122.6,18828],[124.6,18764],[126.6,18828],[128.6,18832],[130.6,18832],[132.6,18844],[134.6,18912],[136.6,18912],[138.6,18924],[140.6,18936],[142.7,18936],[144.7,18940],[146.7,18944],[148.7,18944],[150.7,19020],[152.7,19024],[154.7,18960],[156.7,18960],[158.7,19040],[160.7,19040],[162.7,18980],[164.7,18984],[166.7,19016],[168.7,19072],[170.7,19072],[172.7,19012],[174.7,19016],[176.7,19016],[178.7,19084],[180.7,19088]];
  const settling = (a: number) => {
    let v = SETTLING[0][1];
    for (const [t, kb] of SETTLING) if (t <= a + 0.2) v = kb;
    return { rss: v * 1024 };
  };

  test("RSS still settling after the warm-up (+1.2 MB/min at 17 MB) is no suspect", () => {
    for (let now = T0 + 70; now <= T0 + 180; now += 10) {
      expect({ now: now - T0, s: findSuspects([windowAt(now, settling)], 60).map((x) => x.evidence) }).toEqual({ now: now - T0, s: [] });
    }
    // what tells it from a leak: it grows by less than a tenth of its level per window
    const seen = [130, 140].flatMap((a) => findSuspects([windowAt(T0 + a, settling)], 60, { ...DEFAULT_RULES, process_min_ratio: 0 }));
    expect(seen.map((x) => x.metric)).toEqual(["system.rss_bytes", "system.rss_bytes"]);
  });

  test("a process-level leak (RSS alone) is found once the warm-up is over", () => {
    const f = (a: number) => ({ rss: warming(a).rss + Math.round(a * 40 * 1024) }); // 2.3 MB/min
    expect(findSuspects([windowAt(T0 + 60, f)], 60)).toEqual([]);
    // a full window after the warm-up: +2.3 MB on ~20 MB outgrows the settling allowance (10 %)
    const s = findSuspects([windowAt(T0 + 125, f)], 60);
    expect(s.map((x) => x.metric)).toContain("system.rss_bytes");
    const rss = s.find((x) => x.metric === "system.rss_bytes")!;
    expect(rss.growth_bytes_per_min).toBeGreaterThan(2.3 * MB * 0.9);
  });

  test("growth that slows to a stop within the window is not a leak", () => {
    // a cache filling: 4.4 MB in the first half of a 10-minute window, 1.1 MB in the second
    const snaps: WorkerWindow["snapshots"] = [];
    for (let i = 0; i <= 60; i++) {
      const v = 50 * MB + Math.round(6 * MB * (1 - Math.exp(-i / 22)));
      const sum = summarize(buildSnapshot({ seq: i + 1, time: T0 + 1000 + i * 10, rss_bytes: v, gc_bytes: v - 40 * MB }));
      snaps.push({ time: T0 + 1000 + i * 10, deep: false, metrics: sum.metrics, unrooted: {} });
    }
    const w = { worker: "w", instance: "i", worker_start: T0, snapshots: snaps };
    expect(findSuspects([w], 600)).toEqual([]);
    // it is the slow-down rule that tells it from a leak
    expect(findSuspects([w], 600, { ...DEFAULT_RULES, min_half_ratio: 0, process_min_ratio: 0 }).map((x) => x.metric)).toContain("luajit.gc_bytes");
  });
});
