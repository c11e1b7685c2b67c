/**
 * Deep scan of a glibc thread arena inside a real nginx worker: the leak fixture's
 * /leaky/thread-alloc starts a POSIX thread in the worker that mallocs a known
 * number of blocks of a known size (below the mmap threshold, so they come from the
 * thread's own arena: a 64 MB-aligned mmapped heap, not the brk heap), keeps them and
 * exits. Ground truth: the fixture's answer (blocks, size, the aligned heap they are
 * in) and the worker's /proc/<pid>/maps read by the test (that heap is a separate
 * anonymous mapping, not [heap]). The scan's glibc walk must see that heap and count
 * those chunks in their size class.
 */
import * as fs from "fs";
import { deepScan } from "../harness/deep";
import { Nginx, httpGet } from "../harness/nginx";
import { leakyLoadModule, LEAKY_LOCATIONS } from "../harness/fixtures";
import { validateSnapshot } from "../../schema/validate";

const N = 200;
const SIZE = 40000;
/** glibc chunk of malloc(SIZE): SIZE + 8 header bytes, rounded up to 16 */
const CHUNK = Math.ceil((SIZE + 8) / 16) * 16;
const CLASS_MIN = 2 ** Math.floor(Math.log2(CHUNK));


function cls(s: any): { in_use_chunks: number; in_use_bytes: number } {
  return s.glibc.size_classes.find((c: any) => c.min_bytes === CLASS_MIN) ?? { in_use_chunks: 0, in_use_bytes: 0 };
}

describe("deep scan sees a glibc thread arena of an nginx worker", () => {
  const ngx = new Nginx({
    workers: 1,
    main: leakyLoadModule(),
    appLocations: LEAKY_LOCATIONS + "    location = /leaky/thread-alloc { leaky_upstream_thread_alloc; }\n",
  });
  beforeAll(async () => {
    await ngx.start();
    await ngx.snapshots();
  });
  afterAll(() => ngx.stop());

  test(`${N} blocks of ${SIZE} bytes malloc'd by a worker thread are walked in their arena`, async () => {
    const before = await deepScan(ngx);
    const pid = before.pid;

    const r = await httpGet(ngx.appPort, `/leaky/thread-alloc?n=${N}&size=${SIZE}`);
    expect(r.status).toBe(200);
    const truth = JSON.parse(r.body);
    expect(truth.got).toBe(N);
    const heap = parseInt(truth.heap, 16);
    const lo = parseInt(truth.lo, 16);
    const hi = parseInt(truth.hi, 16);
    // every block lies in the one 64 MB-aligned heap (N * CHUNK = 8 MB fits in one)
    expect(hi - heap).toBeLessThan(64 * 1048576);

    // independent view of the address space: the heap is its own anonymous mapping, not the brk heap
    const maps = fs.readFileSync(`/proc/${pid}/maps`, "utf8").trim().split("\n").map((l) => {
      const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$/.exec(l)!;
      return { start: parseInt(m[1], 16), end: parseInt(m[2], 16), perms: m[3], path: m[4] };
    });
    const holding = maps.find((m) => m.start <= lo && hi < m.end)!;
    expect(holding).toBeDefined();
    expect(holding.path).toBe("");
    expect(holding.perms.startsWith("rw")).toBe(true);
    expect(maps.some((m) => m.start === heap)).toBe(true);

    const after = await deepScan(ngx);
    expect(after.pid).toBe(pid);
    const s = after.scan;
    console.log(
      `thread arena: heap 0x${heap.toString(16)}, scan arena_heaps ${before.scan.arena_heaps} → ${s.arena_heaps}, ` +
        `arena_bytes ${s.arena_bytes}, class ${CLASS_MIN}: in use ${cls(before).in_use_chunks} → ${cls(after).in_use_chunks}, skipped ${JSON.stringify(after.skipped)}`,
    );
    // the walk found the thread's heap
    expect(s.arena_heaps).toBeGreaterThanOrEqual(1);
    expect(s.arena_heaps).toBeGreaterThan(before.scan.arena_heaps);
    expect(s.arena_bytes).toBeGreaterThanOrEqual(N * CHUNK);
    // and counted every block in its size class: N more chunks in use, N * CHUNK more bytes
    // (a few other allocations of that class may come and go between the scans)
    const dChunks = cls(after).in_use_chunks - cls(before).in_use_chunks;
    const dBytes = cls(after).in_use_bytes - cls(before).in_use_bytes;
    expect(dChunks).toBeGreaterThanOrEqual(N);
    expect(dChunks).toBeLessThanOrEqual(N + 4);
    expect(dBytes).toBeGreaterThanOrEqual(N * CHUNK);
    expect(dBytes).toBeLessThanOrEqual((N + 4) * CHUNK * 2);
    // the heap walk of the arena ended cleanly (no header broke an invariant)
    expect(after.skipped.deep_heap_bad_chunk_size ?? 0).toBe(0);
    expect(after.skipped.deep_heap_chunk_past_end ?? 0).toBe(0);

    // a second batch lands in the same arena (the thread that ran the first is gone; glibc
    // hands its arena to the next thread): the walk follows it
    const r2 = await httpGet(ngx.appPort, `/leaky/thread-alloc?n=${N}&size=${SIZE}`);
    expect(JSON.parse(r2.body).held_blocks).toBe(2 * N);
    const again = await deepScan(ngx);
    const d2 = cls(again).in_use_chunks - cls(before).in_use_chunks;
    expect(d2).toBeGreaterThanOrEqual(2 * N);
    expect(d2).toBeLessThanOrEqual(2 * N + 4);
  });
});
