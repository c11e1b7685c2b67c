import { diffStates, sumStates, overlayDeep, slotOf } from "../../control-plane/src/diff";
import { summarize } from "../../control-plane/src/summary";
import { buildSnapshot } from "../fixtures/snapshots";

const sig = "16384|cl|x";
const owner = "ngx_http_x_module.so (.bss+0x40)";
const deepSnap = (pools: number, rss: number, c256: number) =>
  summarize(buildSnapshot({
    rss_bytes: rss, deep: true,
    unrooted: [{ signature: sig, owner, pools, block_bytes: pools * 16384, large_blocks: pools, large_bytes: pools * 300_000 }],
    size_classes: [{ min_bytes: 262144, chunks: c256, bytes: c256 * 300_000 }, { min_bytes: 64, chunks: 500, bytes: 32000 }],
  }));

describe("diff rows", () => {
  test("rows equal hand-computed differences, sorted by growth", () => {
    const a = deepSnap(2, 60_000_000, 5);
    const b = deepSnap(40, 72_000_000, 43);
    const rows = diffStates(a, b);
    const byKey = Object.fromEntries(rows.map((r) => [r.key, r]));
    const g = byKey[`pool.unrooted.${sig}`];
    expect(g).toMatchObject({
      section: "pool", label: `unrooted pools held by ${owner}`,
      a_bytes: 2 * (16384 + 300_000), b_bytes: 40 * (16384 + 300_000), delta_bytes: 38 * (16384 + 300_000),
      a_count: 2, b_count: 40, delta_count: 38,
    });
    expect(g.delta_ratio).toBeCloseTo(19, 12);
    expect(byKey["size_class.262144"]).toMatchObject({ label: "256–512 KB chunks", a_bytes: 1_500_000, b_bytes: 12_900_000, delta_bytes: 11_400_000, delta_count: 38 });
    expect(byKey["system.rss_bytes"]).toMatchObject({ a_bytes: 60_000_000, b_bytes: 72_000_000, delta_bytes: 12_000_000, label: "RSS" });
    expect(byKey["size_class.64"]).toMatchObject({ delta_bytes: 0, delta_count: 0 });
    // sorted by growth: largest increase first
    for (let i = 1; i < rows.length; i++) expect(rows[i - 1].delta_bytes).toBeGreaterThanOrEqual(rows[i].delta_bytes);
    // 38 × 316384 = 12,022,592 > RSS growth 12,000,000
    expect(rows[0].key).toBe(`pool.unrooted.${sig}`);
    expect(rows[1].delta_bytes).toBe(12_000_000);
  });

  test("deep-scan rows only when both sides have a deep scan; ratio null from 0", () => {
    const a = summarize(buildSnapshot({ rss_bytes: 10 }));
    const b = deepSnap(3, 20, 1);
    const rows = diffStates(a, b);
    expect(rows.some((r) => r.section === "size_class" || r.key.startsWith("pool.unrooted."))).toBe(false);
    const z = diffStates({ metrics: { "luajit.gc_bytes": 0 }, unrooted: {}, deep: false }, { metrics: { "luajit.gc_bytes": 100 }, unrooted: {}, deep: false });
    expect(z[0]).toMatchObject({ key: "luajit.gc_bytes", section: "luajit", a_bytes: 0, b_bytes: 100, delta_bytes: 100, delta_ratio: null });
  });

  test("instance sums add workers; overlay takes the deep part of an older deep snapshot", () => {
    const w1 = deepSnap(1, 100, 1), w2 = deepSnap(4, 50, 2);
    const s = sumStates([w1, w2]);
    expect(s.metrics["system.rss_bytes"]).toBe(150);
    expect(s.metrics[`pool.unrooted.${sig}.pools`]).toBe(5);
    const plain = summarize(buildSnapshot({ rss_bytes: 999 }));
    const o = overlayDeep(plain, w2);
    expect(o.deep).toBe(true);
    expect(o.metrics["system.rss_bytes"]).toBe(999);
    expect(o.metrics[`pool.unrooted.${sig}.pools`]).toBe(4);
  });

  test("metric → row mapping", () => {
    expect(slotOf("region.code./lib/libc.so.6.mappings")).toEqual({ row: "region.code./lib/libc.so.6", section: "region", role: "count" });
    expect(slotOf("region.code./lib/libc.so.6.rss_bytes")).toBeUndefined();
    expect(slotOf("shm.a.b.used_bytes")).toEqual({ row: "shm.a.b", section: "shm", role: "bytes" });
    expect(slotOf("pool.unrooted_total.bytes")).toBeUndefined();
    expect(slotOf("agent.collect_ms")).toBeUndefined();
  });
});
