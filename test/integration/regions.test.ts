import * as fs from "fs";
import * as http from "http";
import { Nginx, procStatus } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";

/**
 * system.regions and luajit.gc_bytes of a real worker against ground truth the test reads itself:
 * /proc/<pid>/maps and /proc/<pid>/status, and allocations of known size made in that worker.
 * Requests go over one keepalive connection, so they all reach the same worker; its pid comes back
 * in the body and the snapshot is taken with ?pid= (nextSnapshotOf).
 */
const M = 1024 * 1024;

const LOCATIONS = `
    location = /t/pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
    location = /t/gc {
      content_by_lua_block { collectgarbage("collect") collectgarbage("collect") ngx.say(ngx.worker.pid()) }
    }
    location = /t/hold {
      content_by_lua_block {
        local n = tonumber(ngx.var.arg_n)
        local H = package.loaded.memdiag_test_hold or {}
        package.loaded.memdiag_test_hold = H
        local t = require("table.new")(n, 0)   -- array part of exactly n + 1 slots, filled in place
        for i = 1, n do t[i] = i end
        H.t = t
        collectgarbage("collect") collectgarbage("collect")
        ngx.say(ngx.worker.pid())
      }
    }
    location = /t/malloc {
      content_by_lua_block {
        local ffi = require("ffi")
        pcall(ffi.cdef, "void *malloc(size_t); void *memset(void *, int, size_t);")
        local n = tonumber(ngx.var.arg_bytes)
        local p = ffi.C.malloc(n)
        ffi.C.memset(p, 1, n)
        local H = package.loaded.memdiag_test_hold or {}
        package.loaded.memdiag_test_hold = H
        H.blocks = H.blocks or {}
        H.blocks[#H.blocks + 1] = p   -- never freed
        ngx.say(ngx.worker.pid())
      }
    }
    location = /t/thread {
      content_by_lua_block {
        -- a thread whose start routine is malloc(65536): its first malloc makes a glibc thread arena;
        -- after the join glibc keeps the thread's stack (guard page + stack) cached, still mapped
        local ffi = require("ffi")
        pcall(ffi.cdef, [[
          typedef unsigned long memdiag_test_pthread_t;
          int pthread_create(memdiag_test_pthread_t *t, const void *attr, void *(*start)(void *), void *arg);
          int pthread_join(memdiag_test_pthread_t t, void **ret);
          void *malloc(size_t);
        ]])
        local t = ffi.new("memdiag_test_pthread_t[1]")
        local ret = ffi.new("void *[1]")
        local rc = ffi.C.pthread_create(t, nil, ffi.cast("void *(*)(void *)", ffi.C.malloc), ffi.cast("void *", 65536))
        if rc ~= 0 then return ngx.exit(500) end
        ffi.C.pthread_join(t[0], ret)
        ngx.say(ngx.worker.pid())
      }
    }
`;

/** GET over one kept-alive connection: every request reaches the same worker. */
class Conn {
  private agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  constructor(private port: number) {}
  get(path: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = http.get({ host: "127.0.0.1", port: this.port, path, agent: this.agent, timeout: 30000 }, (res) => {
        let body = "";
        res.on("data", (c) => (body += c));
        res.on("end", () => (res.statusCode === 200 ? resolve(body.trim()) : reject(new Error(`${path}: ${res.statusCode} ${body}`))));
      });
      req.on("error", reject);
    });
  }
  close() {
    this.agent.destroy();
  }
}

interface MapLine {
  start: bigint;
  end: bigint;
  perms: string;
  path: string;
}
function readMaps(pid: number): MapLine[] {
  return fs
    .readFileSync(`/proc/${pid}/maps`, "utf8")
    .trim()
    .split("\n")
    .map((l) => {
      const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$/.exec(l)!;
      return { start: BigInt("0x" + m[1]), end: BigInt("0x" + m[2]), perms: m[3], path: m[4] };
    });
}
const mapsTotal = (ls: MapLine[]) => Number(ls.reduce((s, l) => s + (l.end - l.start), 0n));
/**
 * A snapshot whose collection started after now. nextSnapshotOf() gives one that *finished* after
 * now, but a sliced collection may have read /proc before our request ran between two slices.
 */
async function snapshotAfter(ngx: Nginx, pid: number): Promise<any> {
  const first = await ngx.nextSnapshotOf(pid);
  for (;;) {
    const s = await ngx.nextSnapshotOf(pid);
    if (s.seq > first.seq) return s;
  }
}
const cls = (snap: any, c: string) => snap.system.regions.filter((r: any) => r.class === c);
const bytesOf = (snap: any, c: string) => cls(snap, c).reduce((s: number, r: any) => s + r.bytes, 0);
const rssOf = (snap: any, c: string) => cls(snap, c).reduce((s: number, r: any) => s + (r.rss_bytes ?? 0), 0);

/** Start `ngx` for the enclosing describe; `ready` gets one keepalive connection and the pid of the worker it reaches. */
function startFor(ngx: Nginx, ready: (conn: Conn, pid: number) => void): void {
  let conn: Conn | undefined;
  beforeAll(async () => {
    await ngx.start();
    await ngx.snapshots();
    conn = new Conn(ngx.appPort);
    ready(conn, Number(await conn.get("/t/pid")));
  });
  afterAll(async () => {
    conn?.close();
    await ngx.stop();
  });
}

describe("regions and luajit.gc_bytes against ground truth", () => {
  // every collection classifies: these compare each snapshot with /proc read around it
  const ngx = new Nginx({ workers: 2, appLocations: LOCATIONS, agent: { regions_every_s: 0 } });
  let conn: Conn;
  let pid = 0;
  startFor(ngx, (c, p) => {
    conn = c;
    pid = p;
  });

  test("idle worker: region bytes add up to the mappings the test reads; rss sum ~ VmRSS; [heap] covered; explained >= 0.8", async () => {
    // the address space must hold still around the snapshot for an exact comparison: retry until it does
    let checked = false;
    for (let attempt = 0; attempt < 10 && !checked; attempt++) {
      const before = readMaps(pid);
      const s = await ngx.nextSnapshotOf(pid);
      const status = procStatus(pid);
      const after = readMaps(pid);
      if (mapsTotal(before) !== mapsTotal(after)) continue;
      checked = true;
      expect(validateSnapshot(s).error).toBeUndefined();
      const regions = s.system.regions as any[];
      expect(regions.reduce((a, r) => a + r.bytes, 0)).toBe(mapsTotal(after));
      expect(regions.reduce((a, r) => a + r.mappings, 0)).toBeGreaterThanOrEqual(after.length);
      const rssSum = regions.reduce((a, r) => a + r.rss_bytes, 0);
      expect(Math.abs(rssSum - status.VmRSS)).toBeLessThanOrEqual(Math.max(512 * 1024, status.VmRSS * 0.05));
      const heap = Number(after.filter((l) => l.path === "[heap]").reduce((a, l) => a + (l.end - l.start), 0n));
      expect(heap).toBeGreaterThan(0);
      expect(bytesOf(s, "glibc_heap")).toBeGreaterThanOrEqual(heap);
      // every ELF object the test sees mapped is a code region (by basename, or folded into "(others)")
      expect(cls(s, "code").length).toBeGreaterThan(3);
      expect(s.system.explained_ratio).toBeGreaterThanOrEqual(0.8);
      expect(s.system.explained_ratio).toBeLessThanOrEqual(1.05);
      expect(s.luajit.regions_method).toBe("lj_alloc");
      // the classification held the collector and handed it back at its pace (layers/luajit/gc-hold.ts)
      expect(s.luajit.gc_hold).toBe("threshold");
      expect(s.luajit.regions_bytes).toBe(bytesOf(s, "luajit"));
      expect(s.luajit.regions_bytes).toBeGreaterThan(s.luajit.gc_bytes / 2);
    }
    expect(checked).toBe(true);
  });

  test("a Lua table of 4e6 numbers held in the worker moves luajit.gc_bytes by its size", async () => {
    const n = 4_000_000;
    // independent size: table.new(n, 0) makes an array part of n + 1 TValues of 8 bytes (+ a 64-byte GCtab)
    const expected = (n + 1) * 8 + 64;
    const other = ngx.workerPids().find((p) => p !== pid)!;
    expect(Number(await conn.get("/t/gc"))).toBe(pid);
    const before = await snapshotAfter(ngx, pid);
    const otherBefore = await ngx.nextSnapshotOf(other);
    expect(Number(await conn.get(`/t/hold?n=${n}`))).toBe(pid);
    const after = await snapshotAfter(ngx, pid);
    const otherAfter = await snapshotAfter(ngx, other);
    // each worker reports its own VM: the other worker did not see the table
    expect(Math.abs(otherAfter.luajit.gc_bytes - otherBefore.luajit.gc_bytes)).toBeLessThan(expected / 4);
    const delta = after.luajit.gc_bytes - before.luajit.gc_bytes;
    // slack: garbage made between the forced GC and the snapshot (agent's own collection) differs a little
    expect(Math.abs(delta - expected)).toBeLessThan(1 * M);
    // the array is one LuaJIT direct chunk: the luajit region holds it and grows by about its size
    // (minus segments the allocator released meanwhile: garbage freed by the forced GCs)
    expect(after.luajit.regions_bytes).toBeGreaterThanOrEqual(expected);
    expect(after.luajit.regions_bytes - before.luajit.regions_bytes).toBeGreaterThanOrEqual(expected - 4 * M);
    expect(rssOf(after, "luajit") - rssOf(before, "luajit")).toBeGreaterThanOrEqual(expected - 4 * M);
  });

  test("a 64 MB malloc (touched) grows glibc_heap by >= 64 MB, other_anon does not grow", async () => {
    const bytes = 64 * M;
    const before = await snapshotAfter(ngx, pid);
    expect(Number(await conn.get(`/t/malloc?bytes=${bytes}`))).toBe(pid);
    const after = await snapshotAfter(ngx, pid);
    // >= the block; minus at most one unrelated mmapped chunk freed meanwhile (the agent's own ~250 KB buffers)
    expect(bytesOf(after, "glibc_heap") - bytesOf(before, "glibc_heap")).toBeGreaterThanOrEqual(bytes - 1 * M);
    // resident: the touched block, give or take what the rest of the heap trimmed meanwhile
    expect(rssOf(after, "glibc_heap") - rssOf(before, "glibc_heap")).toBeGreaterThanOrEqual(bytes - 1 * M);
    expect(bytesOf(after, "other_anon")).toBeLessThanOrEqual(bytesOf(before, "other_anon"));
    expect(rssOf(after, "other_anon") - rssOf(before, "other_anon")).toBeLessThan(256 * 1024);
    // and it agrees with glibc's own count of mmapped chunks
    expect(after.glibc.mmap_bytes - before.glibc.mmap_bytes).toBeGreaterThanOrEqual(bytes);
    expect(after.system.explained_ratio).toBeGreaterThanOrEqual(0.8);
  });

  test("a thread's malloc: its 64 MB arena is glibc_heap, its guard + stack are stack (sizes from the test's maps)", async () => {
    const before = await snapshotAfter(ngx, pid);
    const mapsBefore = readMaps(pid);
    expect(Number(await conn.get("/t/thread"))).toBe(pid);
    const after = await snapshotAfter(ngx, pid);
    const mapsAfter = readMaps(pid);
    const key = (l: MapLine) => `${l.start}-${l.end}`;
    const old = new Set(mapsBefore.map(key));
    const added = mapsAfter.filter((l) => !old.has(key(l)) && l.path === "");
    // ground truth: a 64 MB-aligned arena (rw part + PROT_NONE rest = 64 MB) and a stack above a guard page
    const arena = added.filter((l) => l.start % BigInt(64 * M) === 0n && l.perms === "rw-p");
    expect(arena.length).toBe(1);
    const guards = added.filter((l) => l.perms === "---p" && l.end - l.start <= BigInt(M) && l.start % BigInt(64 * M) !== 0n);
    expect(guards.length).toBe(1);
    const stack = mapsAfter.find((l) => l.start === guards[0].end)!;
    expect(stack.perms).toBe("rw-p");
    const stackBytes = Number(stack.end - stack.start + (guards[0].end - guards[0].start));
    expect(bytesOf(after, "glibc_heap") - bytesOf(before, "glibc_heap")).toBeGreaterThanOrEqual(64 * M - 1 * M);
    expect(bytesOf(after, "stack") - bytesOf(before, "stack")).toBe(stackBytes);
    expect(bytesOf(after, "other_anon")).toBeLessThanOrEqual(bytesOf(before, "other_anon"));
  });

  test("no errors in the error log", () => {
    expect(ngx.errors()).toEqual([]);
  });
});

describe("regions_every_s: the classification is reused between refreshes, with its age", () => {
  const EVERY = 4;
  const ngx = new Nginx({ workers: 1, appLocations: LOCATIONS, agent: { interval_s: 1, regions_every_s: EVERY } });
  let conn: Conn;
  let pid = 0;
  startFor(ngx, (c, p) => {
    conn = c;
    pid = p;
  });

  test("timer snapshots carry the last regions and their age (< regions_every_s + one interval); a new classification comes within it", async () => {
    const snaps: any[] = [];
    while (snaps.length < 2 * EVERY + 1) {
      const s = await ngx.nextSnapshotOf(pid);
      if (snaps.length === 0 || s.seq > snaps[snaps.length - 1].seq) snaps.push(s);
    }
    for (const s of snaps) {
      expect(validateSnapshot(s).error).toBeUndefined();
      expect(s.system.regions_age_s).toBeGreaterThanOrEqual(0);
      expect(s.system.regions_age_s).toBeLessThan(EVERY + 1.5);
    }
    // a reused classification is the same list as the snapshot before it, its age grown by about the interval
    const reused = snaps.filter((s, i) => i > 0 && s.system.regions_age_s > snaps[i - 1].system.regions_age_s);
    expect(reused.length).toBeGreaterThanOrEqual(EVERY);
    for (const s of reused) {
      const prev = snaps[snaps.indexOf(s) - 1];
      expect(s.system.regions).toEqual(prev.system.regions);
      expect(s.system.regions_ms).toBe(prev.system.regions_ms);
    }
    // and fresh ones (age dropped) came at least once in two refresh periods
    const fresh = snaps.filter((s, i) => i > 0 && s.system.regions_age_s < snaps[i - 1].system.regions_age_s);
    expect(fresh.length).toBeGreaterThanOrEqual(1);
    for (const s of fresh) expect(s.system.regions_age_s).toBeLessThan(0.5);
  });

  test("?fresh=1 classifies now: a 64 MB malloc made after the last classification is in its glibc_heap", async () => {
    const bytes = 64 * M;
    // wait for a reused snapshot, so the timer's classification predates the malloc
    let before = await ngx.nextSnapshotOf(pid);
    while (before.system.regions_age_s < 1) before = await ngx.nextSnapshotOf(pid);
    expect(Number(await conn.get(`/t/malloc?bytes=${bytes}`))).toBe(pid);
    const r = await ngx.memdiag("?fresh=1");
    expect(r.status).toBe(200);
    const now = JSON.parse(r.body).workers.find((w: any) => w.pid === pid);
    expect(now.system.regions_age_s).toBeLessThan(0.5);
    expect(bytesOf(now, "glibc_heap") - bytesOf(before, "glibc_heap")).toBeGreaterThanOrEqual(bytes - 1 * M);
    expect(rssOf(now, "glibc_heap") - rssOf(before, "glibc_heap")).toBeGreaterThanOrEqual(bytes - 1 * M);
  });

  test("no errors in the error log", () => {
    expect(ngx.errors()).toEqual([]);
  });
});
