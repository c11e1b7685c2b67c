/**
 * Cost of the region classification (system.regions: /proc/self/smaps read + classification of
 * every mapping) in an nginx worker, versus the number of mappings: an idle worker (~110),
 * then +1,000 and +5,000 extra one-page mappings (alternating protections so the kernel cannot
 * merge them), as the agent measures itself:
 *   regions_ms    worker CPU time of the region classification (yields excluded; thread CPU clock,
 *                 so a busy host does not inflate it; smaps is re-read only every Nth collection
 *                 when it is expensive, so with many mappings the median mixes both kinds)
 *   collect_ms    worker time of the whole collection (sum of slices)
 *   max_slice_ms  longest time the collection held the event loop (wall: inflated on a loaded host)
 * Usage: bash bench/run.sh regions-cost
 */
import { Nginx, httpGet } from "../test/harness/nginx";
import { median, percentile } from "./stats";

const LEVELS = (process.env.MEMDIAG_BENCH_MAPPINGS ?? "0,1000,5000").split(",").map(Number);
const SAMPLES = Number(process.env.MEMDIAG_BENCH_SAMPLES ?? 21);

const LOCATIONS = `
    location = /t/mmap {
      content_by_lua_block {
        local ffi = require("ffi")
        pcall(ffi.cdef, "void *mmap(void *, size_t, int, int, int, long); void *memset(void *, int, size_t);")
        local n = tonumber(ngx.var.arg_n)
        local H = package.loaded.memdiag_bench_maps or {}
        package.loaded.memdiag_bench_maps = H
        for i = 1, n do
          local prot = (#H % 2 == 0) and 3 or 1          -- rw / r: neighbours never merge
          local p = ffi.C.mmap(nil, 4096, prot, 0x22, -1, 0) -- MAP_PRIVATE|MAP_ANONYMOUS
          if prot == 3 then ffi.C.memset(p, 1, 4096) end
          H[#H + 1] = p
        end
        ngx.say(#H)
      }
    }
`;


async function sample(ngx: Nginx): Promise<any> {
  const r = await httpGet(ngx.memdiagPort, "/_memdiag?fresh=1");
  if (r.status !== 200) throw new Error(`/_memdiag: ${r.status} ${r.body.slice(0, 200)}`);
  return JSON.parse(r.body).workers[0];
}

async function main(): Promise<void> {
  const ngx = new Nginx({ workers: 1, agent: { interval_s: 3600 }, appLocations: LOCATIONS });
  await ngx.start();
  const rows: string[] = [];
  let added = 0;
  try {
    await ngx.snapshots();
    for (const extra of LEVELS) {
      if (extra > added) {
        const r = await httpGet(ngx.appPort, `/t/mmap?n=${extra - added}`);
        if (r.status !== 200) throw new Error(`/t/mmap: ${r.status} ${r.body}`);
        added = extra;
      }
      for (let i = 0; i < 3; i++) await sample(ngx); // warm up (JIT)
      const reg: number[] = [], col: number[] = [], slice: number[] = [];
      let mappings = 0, explained = 0;
      for (let i = 0; i < SAMPLES; i++) {
        const s = await sample(ngx);
        reg.push(s.system.regions_ms);
        col.push(s.collect_ms);
        slice.push(s.max_slice_ms);
        mappings = s.system.regions.reduce((a: number, r: any) => a + r.mappings, 0);
        explained = s.system.explained_ratio;
      }
      const row =
        `${String(mappings).padStart(6)} mappings | regions ${median(reg).toFixed(3)} ms (min ${Math.min(...reg).toFixed(3)}, p90 ${percentile(reg, 0.9).toFixed(3)}) | ` +
        `${((median(reg) * 1000) / mappings).toFixed(1)} µs/mapping | collect ${median(col).toFixed(3)} ms | ` +
        `regions/collect ${((100 * median(reg)) / median(col)).toFixed(0)} % | max slice ${median(slice).toFixed(3)} ms | explained ${explained.toFixed(3)}`;
      rows.push(row);
      console.log(row);
    }
  } finally {
    await ngx.stop();
  }
  console.log(`\nregions-cost (median of ${SAMPLES} on-demand collections per level)`);
  for (const r of rows) console.log(r);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
