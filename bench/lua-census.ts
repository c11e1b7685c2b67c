/**
 * Cost of the Lua heap census (/_memdiag?lua=census: the object-type census and the walk from the
 * roots for the largest tables) in an nginx worker whose Lua heap the benchmark grows to each
 * level (MEMDIAG_BENCH_LUA_MB, default 10,100 MB) with small tables and strings, as the census
 * reports itself:
 *   objects       live GC objects counted
 *   cpu_ms        worker thread CPU of the whole census (both walks)
 *   objects/s     objects / cpu_ms
 *   wall_ms       from start to answer (yields included)
 *   slices        yields + 1; max_slice_ms: the longest stretch it held the event loop (wall time,
 *                 preemption included), max_slice_cpu: the same in the worker thread's CPU time
 *   hold_ms       how long the collector stayed held by the type census (the walk from the roots
 *                 holds it again for about as long)
 * Usage: bash bench/run.sh lua-census
 */
import { Nginx, httpGet } from "../test/harness/nginx";
import { median } from "./stats";

const LEVELS = (process.env.MEMDIAG_BENCH_LUA_MB ?? "10,100").split(",").map(Number);
const SAMPLES = Number(process.env.MEMDIAG_BENCH_SAMPLES ?? 5);

const LOCATIONS = `
    location = /t/grow {
      content_by_lua_block {
        local H = package.loaded.memdiag_bench_heap or {}
        package.loaded.memdiag_bench_heap = H
        local want = tonumber(ngx.var.arg_mb) * 1048576
        local n = #H
        while collectgarbage("count") * 1024 < want do
          for i = 1, 10000 do n = n + 1 H[n] = { n, "s" .. n } end
        end
        collectgarbage("collect")
        ngx.say(collectgarbage("count") * 1024)
      }
    }
`;

async function census(ngx: Nginx): Promise<any> {
  const r = await httpGet(ngx.memdiagPort, "/_memdiag?lua=census", 120000);
  if (r.status !== 200) throw new Error(`/_memdiag?lua=census: ${r.status} ${r.body.slice(0, 300)}`);
  return JSON.parse(r.body).census;
}

async function main(): Promise<void> {
  const ngx = new Nginx({ workers: 1, agent: { interval_s: 3600 }, appLocations: LOCATIONS });
  await ngx.start();
  const rows: string[] = [];
  try {
    await ngx.snapshots();
    for (const mb of LEVELS) {
      const g = await httpGet(ngx.appPort, `/t/grow?mb=${mb}`, 300000);
      if (g.status !== 200) throw new Error(`/t/grow: ${g.status} ${g.body}`);
      await census(ngx); // warm-up: layout check, traces
      const cs: any[] = [];
      for (let i = 0; i < SAMPLES; i++) cs.push(await census(ngx));
      const m = (f: (c: any) => number) => median(cs.map(f));
      const maxSlice = Math.max(...cs.map((c) => c.max_slice_ms));
      rows.push(
        [
          `${(m((c) => c.heap_bytes) / 1048576).toFixed(0)} MB`.padStart(8),
          String(Math.round(m((c) => c.objects))).padStart(10),
          m((c) => c.cpu_ms).toFixed(1).padStart(8),
          `${(m((c) => c.objects / c.cpu_ms) / 1000).toFixed(1)}M`.padStart(10),
          m((c) => c.wall_ms).toFixed(0).padStart(8),
          String(Math.round(m((c) => c.slices))).padStart(7),
          `${m((c) => c.max_slice_ms).toFixed(2)} / ${maxSlice.toFixed(2)}`.padStart(14),
          `${m((c) => c.max_slice_cpu_ms).toFixed(2)} / ${Math.max(...cs.map((c) => c.max_slice_cpu_ms)).toFixed(2)}`.padStart(14),
          m((c) => c.hold_ms).toFixed(0).padStart(8),
          String(cs.reduce((s, c) => s + c.attempts - 1, 0)).padStart(7),
        ].join(" "),
      );
    }
  } finally {
    await ngx.stop();
  }
  console.log(`Lua heap census, ${SAMPLES} runs per level (medians; max_slice: median / max)`);
  console.log("    heap    objects   cpu_ms  objects/s  wall_ms  slices  max_slice_ms  max_slice_cpu  hold_ms retries");
  for (const r of rows) console.log(r);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
