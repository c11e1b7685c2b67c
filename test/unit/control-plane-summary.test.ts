import { summarize, isDeepMetric } from "../../control-plane/src/summary";
import { buildSnapshot, defaultSizeClasses } from "../fixtures/snapshots";
import { validateSnapshot } from "../../schema/validate";

describe("summary: a snapshot flattened to metric → number", () => {
  test("fixture snapshots pass the schema (plain and deep)", () => {
    expect(validateSnapshot(buildSnapshot()).error).toBeUndefined();
    const deep = buildSnapshot({ deep: true, unrooted: [{ signature: "s1", owner: "x.so (.bss+0x40)", pools: 3, block_bytes: 49152, large_blocks: 3, large_bytes: 900000 }] });
    expect(validateSnapshot(deep).error).toBeUndefined();
  });

  test("every layer lands under its name with the input value", () => {
    const s = buildSnapshot({
      rss_bytes: 50_000_000, gc_bytes: 3_333_333, glibc_in_use_bytes: 17_000_000,
      shm: [{ name: "cache.v2", size_bytes: 1 << 20, used_bytes: 4096 }], request_pools: 7, request_pool_bytes: 28672,
      deep: true,
      unrooted: [
        { signature: "16384|cl_a|.bss+0x40", owner: "ngx_http_x_module.so (.bss+0x40)", pools: 38, block_bytes: 38 * 16384, large_blocks: 38, large_bytes: 38 * 300_000, cleanups: ["cl_a"] },
      ],
      size_classes: [{ min_bytes: 262144, chunks: 40, bytes: 40 * 300_000 }, { min_bytes: 32, chunks: 100, bytes: 4000 }],
    });
    const { metrics: m, unrooted, deep } = summarize(s);
    expect(deep).toBe(true);
    expect(m["system.rss_bytes"]).toBe(50_000_000);
    expect(m["luajit.gc_bytes"]).toBe(3_333_333);
    expect(m["glibc.in_use_bytes"]).toBe(17_000_000);
    expect(m["shm.cache.v2.used_bytes"]).toBe(4096);
    expect(m["shm.cache.v2.size_bytes"]).toBe(1 << 20);
    expect(m["region.shm_zone.cache.v2"]).toBe(1 << 20);
    // code mappings summed per class: 20 libraries of 1 MB + i × 4096 bytes, 4 mappings each
    expect(m["region.code"]).toBe(20 * (1 << 20) + 4096 * (19 * 20 / 2));
    expect(m["region.code.mappings"]).toBe(80);
    expect(m["pool.request.pools"]).toBe(7);
    expect(m["pool.request.bytes"]).toBe(28672);
    const sig = "pool.unrooted.16384|cl_a|.bss+0x40";
    expect(m[`${sig}.pools`]).toBe(38);
    expect(m[`${sig}.bytes`]).toBe(38 * 16384 + 38 * 300_000);
    expect(m[`${sig}.large_blocks`]).toBe(38);
    expect(m["pool.unrooted_total.pools"]).toBe(38);
    expect(m["size_class.262144.chunks"]).toBe(40);
    expect(m["size_class.262144.bytes"]).toBe(12_000_000);
    expect(m["size_class_total.chunks"]).toBe(140);
    expect(unrooted["16384|cl_a|.bss+0x40"]).toEqual({ owner: "ngx_http_x_module.so (.bss+0x40)", retainer: "ngx_http_x_module.so → pool → pool", create_size: 16384, cleanups: ["cl_a"] });
  });

  test("a plain snapshot has no deep-scan metrics", () => {
    const { metrics, deep } = summarize(buildSnapshot());
    expect(deep).toBe(false);
    expect(Object.keys(metrics).filter(isDeepMetric)).toEqual([]);
    expect(defaultSizeClasses().length).toBeGreaterThan(10);
  });
});
