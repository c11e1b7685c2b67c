/**
 * The native sampler outside nginx, driven by a small C program
 * (test/fixtures/sampler-driver/driver.c, built here with cc): call paths,
 * exact counts at rate 1, cross-thread frees, realloc, GOT restore.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ROOT } from "../../control-plane/src/config-file";
import { ensureSampler } from "../harness/fixtures";

const POSIX_MEMALIGN = 4;
const MALLOC = 0;
const REALLOC = 2;

describe("native sampler driven from C", () => {
  let r: any;
  let full: any;
  let nur: any;
  beforeAll(() => {
    const so = ensureSampler();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-driver-"));
    const exe = path.join(dir, "driver");
    // BIND_NOW: the driver's GOT holds the real functions before arming (like Debian's nginx)
    execFileSync("cc", ["-O1", "-g", "-Wl,-z,now", "-o", exe, path.join(ROOT, "test/fixtures/sampler-driver/driver.c"), "-ldl", "-pthread"]);
    r = JSON.parse(execFileSync(exe, [so], { encoding: "utf8", timeout: 60000 }));
    nur = JSON.parse(execFileSync(exe, [so, "nursery"], { encoding: "utf8", timeout: 60000 }));
    // the same library with tiny tables: 256 live records, 4 call paths
    const small = path.join(dir, "libsmall.so");
    execFileSync("cc", ["-std=gnu11", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-fno-omit-frame-pointer", "-DMS_ENTRY_BITS=8", "-DMS_MAX_STACKS=4",
      "-Wl,-z,now", "-o", small, path.join(ROOT, "lua-src/native/sampler.c"), "-pthread", "-ldl", "-lm"]);
    full = JSON.parse(execFileSync(exe, [small, "full"], { encoding: "utf8", timeout: 60000 }));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("arming rewrites the driver's slots; disarm restores every scanned slot exactly", () => {
    expect(r.patched).toBeGreaterThanOrEqual(4);
    expect(r.hooked).toBe(r.patched);
    expect(r.restored).toBe(r.patched);
    expect(r.got_equal).toBe(true);
  });

  test("call paths through the same innermost frame are told apart; counts are exact at rate 1", () => {
    const pm = r.paths.filter((p: any) => p.fn === POSIX_MEMALIGN).sort((a: any, b: any) => a.depth - b.depth || a.live - b.live);
    // via_a (150 left of 300), via_b (300), deep(0..2) (100 each, depths 1 frame apart)
    const byDepth = pm.map((p: any) => [p.live, p.total]);
    expect(byDepth).toEqual(expect.arrayContaining([[150, 300], [300, 300], [100, 100], [100, 100], [100, 100]]));
    expect(pm.reduce((a: number, p: any) => a + p.total, 0)).toBe(900);
  });

  test("allocations of 4 threads freed by 4 other threads are all matched", () => {
    expect(r.live_before_consumers - r.live_after_consumers).toBe(4 * 5000);
    // listed paths have live records; the threads' path has none left (and malloc(10) became a realloc record)
    expect(r.paths.filter((p: any) => p.fn === MALLOC)).toEqual([]);
    expect(r.frees_matched).toBeGreaterThanOrEqual(4 * 5000 + 150);
    expect(r.cache_hits).toBeGreaterThan(r.unwinds);
  });

  test("bounded tables: 1000 allocations on 8 paths with room for 256 records / 4 paths: drops counted, kept ones consistent", () => {
    expect(full.armed).toBeGreaterThan(0);
    expect(full.live).toBeLessThanOrEqual(256);
    expect(full.paths).toBeLessThanOrEqual(4);
    expect(full.paths_live).toBe(full.live);
    expect(full.live + full.drops_entries + full.drops_stacks).toBe(1000);
    expect(full.drops_stacks).toBeGreaterThan(0);
    expect(full.drops_entries).toBeGreaterThan(0);
    expect(full.live_after_free).toBe(0);
  });

  test("realloc: the record follows the block (one live record of the last size)", () => {
    const re = r.paths.filter((p: any) => p.fn === REALLOC);
    expect(re.reduce((a: number, p: any) => a + p.live, 0)).toBe(1);
    expect(re.reduce((a: number, p: any) => a + p.live_bytes, 0)).toBe(50 * 1000);
  });

  test("main-thread nursery: 600 live pool blocks (more than it holds), frees in another order, readers in between: counts exact", () => {
    expect(nur.armed).toBeGreaterThan(0);
    // 200 left of 600: 100 of 256 bytes (via_a), 100 of 272 (via_b); totals count all 600
    expect(nur.mid).toEqual({
      live: 200, bytes: 100 * 256 + 100 * 272, total: 600, total_bytes: 300 * 256 + 300 * 272,
      id_last: expect.any(Number), size_last: 256, id_mid: expect.any(Number), size_mid: 272, id_freed: 0,
    });
    expect(nur.mid.id_last).toBeGreaterThan(0);
    expect(nur.mid.id_mid).toBeGreaterThan(0);
    expect(nur.mid.id_mid).not.toBe(nur.mid.id_last);
    // then 300 short-lived blocks of 512 bytes (100 kept) and the 200 older ones freed newest first
    // (paths without live records are not listed: only the 512-byte call site, all 300 of its blocks in its total)
    expect(nur.end).toEqual({ live: 100, bytes: 100 * 512, total: 300, window_live: 100 });
    // records stay readable after disarm (frees no longer seen); a new arm starts empty
    expect(nur.after_disarm_live).toBe(100);
    expect(nur.rearmed).toBeGreaterThan(0);
    expect(nur.rearm_live).toBe(0);
    expect(nur.rearm_end).toEqual({ live: 3, total: 5 });
  });
});
