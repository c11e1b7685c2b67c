/**
 * Deep scan throughput: heap walk with pool recognition and reference
 * scan, in MB/s of thread CPU time, on heaps inflated to 10 MB, 100 MB and 1 GB,
 * and the longest slice. One nginx worker; a test location inflates the heap with
 * small chunks (32..2048 bytes, a quarter of their words pointers to other chunks:
 * the reference scan has to look those up) and one pool per 4 MB (16 KB block +
 * a small allocation), held through a malloc'd registry that a Lua cdata points at
 * (so ownership runs lua → heap chunk → pool).
 *   walk MB/s  = scan.heap_bytes / scan.phase_cpu_ms.walk
 *   ref MB/s   = scan.ref_bytes  / scan.phase_cpu_ms.owners
 *   max slice  = scan.max_slice_cpu_ms (CPU) and scan.max_slice_ms (wall, includes other processes)
 *   slow slices, p99 = over slices the worker was not switched out during (scan.preempted_slices:
 *     this VM's thread CPU clock is unreliable across an involuntary switch), listed apart
 * Usage: bash bench/run.sh deep-scan    (MEMDIAG_BENCH_SIZES=10,100,1024 in MB; MEMDIAG_BENCH_SCANS=3)
 *   MEMDIAG_BENCH_SITES=1: every slow slice (scan.slow_slice_sites: steps, checks, faults, switches,
 *   traces compiled); MEMDIAG_BENCH_JIT=1: the trace compiler's activity per scan (scan.jit_traces)
 * Targets: walk ≥ 1 GB/s, reference scan ≥ 300 MB/s, longest slice ≤ 1.5 ms.
 *
 * The machine's own floor, in the same worker on the same heap: a plain FFI loop summing every
 * word of the brk heap in pieces cut like the scan's slices (64 KB reads, a piece ends once 1 ms
 * of wall time has passed), each piece's thread CPU time taken as a slice's is, for as long as the
 * scans ran: SCANS stretches of the median scan's CPU time. The same statistic on both sides: the
 * median over scans of the longest slice, the median over stretches of the longest piece. When
 * plain reading has pieces over 1.5 ms too (this VM's stalls: milliseconds on a few tens of KB,
 * with no page fault and no preemption), a longest slice over 1.5 ms is the machine's, and the
 * verdict says UNRESOLVED rather than MISS.
 */
import * as fs from "fs";
import * as path from "path";
import { Nginx, httpGet } from "../test/harness/nginx";

/**
 * MEMDIAG_BENCH_LUA_DIR=<dir>: run the agent's Lua from another build (e.g. an older commit's
 * build/lua, compiled in a git worktree) in the same bench, for before/after comparisons.
 */
class AltLuaNginx extends Nginx {
  writeConf(): void {
    super.writeConf();
    const alt = process.env.MEMDIAG_BENCH_LUA_DIR;
    if (!alt) return;
    const built = path.join(__dirname, "..", "..", "build", "lua");
    const f = path.join(this.prefix, "conf", "memdiag.conf");
    const text = fs.readFileSync(f, "utf8");
    if (!text.includes(built)) throw new Error(`MEMDIAG_BENCH_LUA_DIR: ${built} not in ${f}`);
    fs.writeFileSync(f, text.split(built).join(alt));
  }
}

const load = (): string => fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");

const SIZES = (process.env.MEMDIAG_BENCH_SIZES ?? "10,100,1024").split(",").map(Number);
const SCANS = Number(process.env.MEMDIAG_BENCH_SCANS ?? 3);

const READ_FLOOR = `
    location = /t/readfloor {
      content_by_lua_block {
        local ffi = require "ffi"
        local clock = require("memdiag.base.clock")
        local cpuMs, monoMs = clock.cpuMs, clock.monoMs
        -- pieces like the scan's slices: 64 KB reads with a wall-clock check after each, a piece
        -- ends once slice_ms has passed; "groups" stretches of "ms" CPU each (a scan's worth)
        local sliceMs = tonumber(ngx.var.arg_slice_ms) or 1
        local groupMs = tonumber(ngx.var.arg_ms) or 0
        local groups = tonumber(ngx.var.arg_groups) or 1
        local STEP = 65536
        local ranges = {}
        for line in io.lines("/proc/self/maps") do
          local a, b = line:match("^(%x+)-(%x+) rw%-p .*%[heap%]")
          if a then ranges[#ranges + 1] = { tonumber(a, 16), tonumber(b, 16) } end
        end
        local sum = 0
        local function words(p, n)
          local w = ffi.cast("const uint64_t *", p)
          for i = 0, n - 1 do sum = sum + tonumber(w[i] % 4096) end
        end
        -- a pass to compile the loop first (an interpreted piece takes milliseconds)
        for _, r in ipairs(ranges) do
          for p = r[1], r[2] - 8, STEP do words(p, math.floor((math.min(p + STEP, r[2]) - p) / 8)) end
        end
        local cpus, gmax, bytes = {}, {}, 0
        local g, gcpu, passes = 1, 0, 0
        while g <= groups or passes == 0 do
          for _, r in ipairs(ranges) do
            local p = r[1]
            while p < r[2] - 8 do
              local c0, w0 = cpuMs(), monoMs()
              repeat
                local n = math.floor((math.min(p + STEP, r[2]) - p) / 8)
                words(p, n)
                bytes = bytes + n * 8
                p = p + STEP
              until p >= r[2] - 8 or monoMs() - w0 >= sliceMs
              local c = math.min(cpuMs() - c0, monoMs() - w0)
              cpus[#cpus + 1] = c
              if g <= groups then
                if c > (gmax[g] or 0) then gmax[g] = c end
                gcpu = gcpu + c
                if gcpu >= groupMs then g, gcpu = g + 1, 0 end
              end
            end
          end
          passes = passes + 1
          if passes > 1000 then break end
        end
        table.sort(cpus)
        local over = 0
        for _, c in ipairs(cpus) do if c > 1.5 then over = over + 1 end end
        local gs = {}
        for i = 1, #gmax do gs[i] = gmax[i] end
        table.sort(gs)
        ngx.say(string.format('{"pieces":%d,"bytes":%d,"passes":%d,"max_cpu_ms":%.4f,"p99_cpu_ms":%.4f,"median_cpu_ms":%.4f,"over_1_5":%d,"groups":%d,"group_max_median_ms":%.4f,"group_max":[%s],"sum":%d}',
          #cpus, bytes, passes, cpus[#cpus] or 0, cpus[math.max(1, math.floor(#cpus * 0.99))] or 0, cpus[math.max(1, math.floor(#cpus / 2))] or 0, over,
          #gmax, gs[math.floor(#gs / 2) + 1] or 0, table.concat(gmax, ","), sum % 1000))
      }
    }
`;

const INFLATE = `
    location = /t/inflate {
      content_by_lua_block {
        local ffi = require "ffi"
        pcall(ffi.cdef, [[
          void *malloc(size_t size);
          void *ngx_create_pool(size_t size, void *log);
          void *ngx_palloc(void *pool, size_t size);
          extern void *ngx_cycle;
        ]])
        local C = ffi.C
        local B = package.loaded.memdiag_bench or { added = 0, prev = 0, seed = 12345, npools = 0 }
        package.loaded.memdiag_bench = B
        local log = ffi.cast("void **", C.ngx_cycle)[2]
        if not B.registry then
          -- pool registry: a malloc'd array of pool pointers that a Lua cdata holds
          B.registry = ffi.cast("uint64_t *", C.malloc(8 * 8192))
          ffi.fill(B.registry, 8 * 8192, 0)
        end
        local want = tonumber(ngx.var.arg_mb) * 1048576
        local nextPool = (B.npools + 1) * 4194304
        while B.added < want do
          B.seed = (B.seed * 1103515245 + 12345) % 2147483648
          local size = 32 + (B.seed % 2017)
          local p = C.malloc(size)
          local w = ffi.cast("uint64_t *", p)
          local a = tonumber(ffi.cast("uintptr_t", p))
          local n = math.floor(size / 8)
          for i = 0, n - 1 do
            if i % 4 == 0 then w[i] = B.prev + (i * 8) % 64 else w[i] = i end
          end
          B.prev = a
          B.added = B.added + size + 16
          if B.added >= nextPool and B.npools < 8192 then
            local pool = C.ngx_create_pool(16384, log)
            C.ngx_palloc(pool, 200)
            B.registry[B.npools] = tonumber(ffi.cast("uintptr_t", pool))
            B.npools = B.npools + 1
            nextPool = (B.npools + 1) * 4194304
          end
        end
        ngx.say(string.format('{"added":%d,"pools":%d}', B.added, B.npools))
      }
    }
`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function deep(ngx: Nginx): Promise<any> {
  const r = await httpGet(ngx.memdiagPort, "/_memdiag?deep=1", 600000);
  if (r.status !== 200) throw new Error(`deep=1: ${r.status} ${r.body.slice(0, 300)}`);
  const w = JSON.parse(r.body).workers[0];
  if (w.scan.state !== "done") throw new Error(`scan ${w.scan.state}: ${w.scan.error}`);
  return w;
}

async function main(): Promise<void> {
  const ngx = new AltLuaNginx({ workers: 1, agent: { interval_s: 3600 }, memdiagLocations: INFLATE + READ_FLOOR });
  await ngx.start();
  const rows: string[] = [];
  try {
    await ngx.snapshots();
    await deep(ngx); // warm up (JIT)
    for (const mb of SIZES) {
      const inf = await httpGet(ngx.memdiagPort, `/t/inflate?mb=${mb}`, 600000);
      if (inf.status !== 200) throw new Error(`inflate: ${inf.status} ${inf.body.slice(0, 300)}`);
      if (process.env.MEMDIAG_BENCH_MAPS) {
        for (const pid of ngx.workerPids()) {
          const lines = fs.readFileSync(`/proc/${pid}/maps`, "utf8").trim().split("\n");
          const big = lines.filter((l) => {
            const [a, b] = l.split(" ")[0].split("-").map((x) => parseInt(x, 16));
            return b - a >= 4 * 1048576;
          });
          console.log(`worker ${pid}: ${lines.length} mappings; >= 4 MB:\n  ${big.join("\n  ")}`);
        }
      }
      const walk: number[] = [], ref: number[] = [], sliceCpu: number[] = [], p99: number[] = [], slow: number[] = [], mapsReads: number[] = [], sliceWall: number[] = [], cpu: number[] = [], wall: number[] = [], slices: number[] = [];
      const jumps: number[] = [];
      const diag: number[] = [];
      const pre: string[] = [];
      let last: any;
      const sitesAll: string[] = [];
      for (let i = 0; i < SCANS; i++) {
        const s = await deep(ngx);
        const sc = s.scan;
        walk.push(sc.heap_bytes / 1048576 / (sc.phase_cpu_ms.walk / 1000));
        ref.push(sc.ref_bytes / 1048576 / (sc.phase_cpu_ms.owners / 1000));
        sliceCpu.push(sc.max_slice_cpu_ms);
        p99.push(sc.slice_cpu_p99_ms ?? NaN);
        slow.push(sc.slow_slices ?? NaN);
        mapsReads.push(sc.maps_reads ?? NaN);
        jumps.push(sc.cpu_clock_jumps ?? NaN);
        diag.push(sc.diag_ms ?? NaN);
        pre.push(`${sc.preempted_slices}/${sc.slow_preempted_slices}/${(sc.max_preempted_slice_cpu_ms ?? NaN).toFixed(1)}`);
        sliceWall.push(sc.max_slice_ms);
        cpu.push(sc.cpu_ms);
        wall.push(sc.wall_ms);
        slices.push(sc.slices);
        for (const x of sc.slow_slice_sites ?? []) sitesAll.push(`scan ${i + 1}: ${x}`);
        if (process.env.MEMDIAG_BENCH_JIT) for (const x of sc.jit_traces ?? []) sitesAll.push(`scan ${i + 1} jit: ${x}`);
        last = s;
      }
      // the machine's floor on the same heap, right after the scans: plain reads in slices of the
      // same length, for as long as the scans ran (each group as long as the median scan's CPU time)
      const fl = await httpGet(ngx.memdiagPort, `/t/readfloor?slice_ms=1&groups=${SCANS}&ms=${median(cpu).toFixed(1)}`, 600000);
      if (fl.status !== 200) throw new Error(`readfloor: ${fl.status} ${fl.body.slice(0, 300)}`);
      const floor = JSON.parse(fl.body);
      const sc = last.scan;
      const longest = median(sliceCpu);
      // the same statistic on both sides: the median over scans (over groups) of the longest slice (piece)
      const verdict = longest <= 1.5 ? "PASS" : floor.group_max_median_ms > 1.5 ? "UNRESOLVED (the machine: plain reads stall as long)" : "MISS";
      const floorRow =
        `   plain read of the same heap in 1 ms pieces, ${floor.groups} stretches of a scan's CPU time (${floor.passes} passes): ${floor.pieces} pieces, median ${floor.median_cpu_ms.toFixed(3)} ms, p99 ${floor.p99_cpu_ms.toFixed(3)} ms, ` +
        `over 1.5 ms: ${floor.over_1_5}, longest per stretch ${floor.group_max.map((x: number) => x.toFixed(2)).join("/")} ms (median ${floor.group_max_median_ms.toFixed(3)}) | ` +
        `longest slice per scan ${sliceCpu.map((x) => x.toFixed(2)).join("/")} ms (median ${longest.toFixed(3)}): ${verdict}`;
      const row =
        `heap ${String(Math.round(sc.heap_bytes / 1048576)).padStart(5)} MB | ref scanned ${String(Math.round(sc.ref_bytes / 1048576)).padStart(5)} MB | ` +
        `pools ${String(sc.pools_found).padStart(5)} | walk ${median(walk).toFixed(0).padStart(6)} MB/s | ref scan ${median(ref).toFixed(0).padStart(5)} MB/s | ` +
        `cpu ${median(cpu).toFixed(1)} ms (walk ${sc.phase_cpu_ms.walk.toFixed(1)}, discover ${sc.phase_cpu_ms.discover.toFixed(1)}, owners ${sc.phase_cpu_ms.owners.toFixed(1)}) | ` +
        `wall ${median(wall).toFixed(0)} ms in ${median(slices)} slices | slice cpu p99 ${Math.max(...p99).toFixed(1)} ms, over 1.5 ms: ${slow.join("/")} slices | maps reads ${median(mapsReads)} | cpu clock jumps ${jumps.join("/")} | diagnostics ${diag.map((x) => x.toFixed(2)).join("/")} ms | preempted slices (n/over 1.5 ms/longest ms) ${pre.join(" ")} | longest slice cpu ${Math.max(...sliceCpu).toFixed(3)} ms (median ${median(sliceCpu).toFixed(3)}; ${sc.max_slice_phase}), wall ${Math.max(...sliceWall).toFixed(3)} ms`;
      rows.push(`${row} | load ${load()}`);
      rows.push(floorRow);
      console.log(row);
      console.log(floorRow);
      if (process.env.MEMDIAG_BENCH_MAPS) console.log(`   regions: arena heaps ${sc.arena_heaps}, mmapped chunks ${sc.mmapped_chunks}; skipped ${JSON.stringify(last.skipped)}`);
      if (process.env.MEMDIAG_BENCH_SITES) {
        for (const x of sitesAll) console.log(`   slow: ${x}`);
      }
      const big = last.pools.unrooted[0];
      if (big) console.log(`   largest unrooted group: ${big.pools} pools, owner ${big.owner}, retainer ${big.retainer}`);
    }
  } finally {
    await ngx.stop();
  }
  console.log(`\ndeep-scan (median of ${SCANS} scans per size; targets: walk ≥ 1024 MB/s, ref scan ≥ 300 MB/s, longest slice ≤ 1.5 ms)`);
  for (const r of rows) console.log(r);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
