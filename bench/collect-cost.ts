/**
 * Per-collection cost in an nginx worker versus the number of active keepalive
 * connections (10, 1,000, 10,000), measured by the agent itself:
 *   collect_ms    worker time of one whole collection (sum of slices, yields excluded)
 *   max_slice_ms  longest time the collection held the event loop
 *   walk_ms       thread CPU time of the rooted pool walk alone; ns/pool = walk_ms / pools_walked
 *   walk max slice  longest CPU stretch of the walk between two yields (worst of the samples)
 *   regions_ms    the region classification layer (system.regions_ms), for comparison
 *   compiled in  how many of the samples ran the compiled walk (layers/pools/rooted-jit.ts: interpreted
 *                below 800 pools walked)
 *   alloc        Lua memory one collection allocates, its encode and publish included, with the
 *                collector stopped for that collection (/t/alloc); ", with regions" when it also
 *                classifies the address space (every regions_every_s). Every byte allocated is
 *                garbage a second later whose collection the worker pays inside some slice:
 *                the bench's requests run no Lua, so here the agent is the collector's only cause.
 * One nginx worker, connections opened from this process and held open. Each level starts with
 * MEMDIAG_BENCH_WARMUP (30) collections left out: the first ones after the walk turns compiled
 * carry its trace compiles (at 1,000 connections, 1,024 ns per pool with 3 left out, 243 with
 * 30, 190 with 100).
 * Usage: npm run bench   (or: bash bench/run.sh collect-cost)
 * Targets: ≤ 0.5 µs per pool walked, ≤ 5 ms per collection at 10,000 connections.
 */
import * as net from "net";
import { Nginx, httpGet } from "../test/harness/nginx";
import { openKeepalive } from "../test/harness/keepalive";
import { median } from "./stats";

const LEVELS = (process.env.MEMDIAG_BENCH_LEVELS ?? "10,1000,10000").split(",").map(Number);
const SAMPLES = Number(process.env.MEMDIAG_BENCH_SAMPLES ?? 15);
const WARMUP = Number(process.env.MEMDIAG_BENCH_WARMUP ?? 30);

function min(xs: number[]): number {
  return Math.min(...xs);
}


async function sample(ngx: Nginx): Promise<any> {
  const r = await httpGet(ngx.memdiagPort, "/_memdiag?fresh=1");
  if (r.status !== 200) throw new Error(`/_memdiag: ${r.status} ${r.body.slice(0, 200)}`);
  return JSON.parse(r.body).workers[0];
}

/**
 * One collection with the collector held: collectgarbage("count") before and after is then what
 * it allocated (nothing else in this worker runs Lua meanwhile). ?full=1 classifies regions too.
 * No full collection first: it shrinks LuaJIT's buffers and string table and unmaps freed
 * chunks (so /proc/self/maps changes and is parsed again), and the measured collection would
 * pay to grow them back: 48 KB measured that way, against ~24 KB per ordinary collection in a
 * worker's steady state (its Lua heap read every 0.5 s between two GC cycles).
 */
const ALLOC_LUA = `
    location = /t/alloc {
        content_by_lua_block {
            local agent = require("memdiag.agent")
            collectgarbage("stop")
            local before = collectgarbage("count")
            local json, err = agent.collectAndPublish(true, ngx.var.arg_full == "1")
            local after = collectgarbage("count")
            collectgarbage("restart")
            if not json then ngx.status = 500 ngx.say(err) return end
            ngx.say(string.format("%.3f", after - before))
        }
    }`;

async function allocKb(ngx: Nginx, full: boolean): Promise<number> {
  const r = await httpGet(ngx.memdiagPort, `/t/alloc?full=${full ? 1 : 0}`);
  if (r.status !== 200) throw new Error(`/t/alloc: ${r.status} ${r.body.slice(0, 200)}`);
  return Number(r.body.trim());
}

async function main(): Promise<void> {
  const maxN = Math.max(...LEVELS);
  const ngx = new Nginx({
    workers: 1,
    workerConnections: maxN + 1024,
    main: `worker_rlimit_nofile ${2 * maxN + 4096};`,
    // collections only on demand (?fresh=1) besides a slow timer
    agent: { interval_s: 3600 },
    memdiagLocations: ALLOC_LUA,
  });
  await ngx.start();
  const socks: net.Socket[] = [];
  const rows: string[] = [];
  try {
    // let the first timer collection (layout validation) happen
    await ngx.snapshots();
    for (const n of LEVELS) {
      await openKeepalive(ngx.appPort, n - socks.length, socks);
      for (let i = 0; i < WARMUP; i++) await sample(ngx); // warm up (JIT)
      const c: number[] = [], slice: number[] = [], walk: number[] = [], ns: number[] = [], slices: number[] = [], regions: number[] = [], walkSlice: number[] = [];
      let active = 0, walked = 0, compiledRuns = 0;
      for (let i = 0; i < SAMPLES; i++) {
        const s = await sample(ngx);
        if (!s.pools.available) throw new Error(`pools unavailable: ${s.pools.error}`);
        c.push(s.collect_ms);
        slice.push(s.max_slice_ms);
        slices.push(s.slices);
        walk.push(s.pools.walk_ms);
        walkSlice.push(s.pools.walk_max_slice_ms);
        regions.push(s.system.regions_ms ?? NaN);
        walked = s.pools.pools_walked;
        if (s.pools.walk_compiled) compiledRuns++;
        ns.push((s.pools.walk_ms * 1e6) / s.pools.pools_walked);
        active = s.pools.connections.by_listener.find((b: any) => b.listen === `127.0.0.1:${ngx.appPort}`)?.active ?? 0;
      }
      const alloc: number[] = [], allocFull: number[] = [];
      for (let i = 0; i < 7; i++) {
        alloc.push(await allocKb(ngx, false));
        allocFull.push(await allocKb(ngx, true));
      }
      const row =
        `${String(n).padStart(6)} conns | active ${String(active).padStart(6)} | pools walked ${String(walked).padStart(6)} | ` +
        `collect ${median(c).toFixed(3)} ms (min ${min(c).toFixed(3)}) | rooted walk ${median(walk).toFixed(3)} ms (min ${min(walk).toFixed(3)}) | ` +
        `${median(ns).toFixed(0)} ns/pool (min ${min(ns).toFixed(0)}, compiled in ${compiledRuns}/${SAMPLES}) | ` +
        `walk max slice ${Math.max(...walkSlice).toFixed(3)} ms | slices ${median(slices)} | max slice ${median(slice).toFixed(3)} ms | ` +
        `regions layer ${median(regions).toFixed(3)} ms | alloc ${median(alloc).toFixed(1)} KB, with regions ${median(allocFull).toFixed(1)} KB`;
      rows.push(row);
      console.log(row);
    }
  } finally {
    for (const s of socks) s.destroy();
    await ngx.stop();
  }
  const load = require("os").loadavg().map((x: number) => x.toFixed(1)).join(" ");
  console.log(`\ncollect-cost (median and min of ${SAMPLES} collections per level; load average ${load} on ${require("os").cpus().length} CPUs)`);
  console.log("targets: ≤ 500 ns per pool walked, ≤ 5 ms per collection at 10,000 connections");
  for (const r of rows) console.log(r);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
