/**
 * Per-call cost of the allocation sampler's hooks, outside nginx: the sampler
 * driver (test/fixtures/sampler-driver, a BIND_NOW executable whose GOT the
 * sampler rewrites) times malloc/free and pool-sized posix_memalign/free in
 * thread CPU time, unhooked vs armed (default rate, pool blocks recorded in
 * full) vs disarmed. CPU time of one thread, best of 7, so the figures hold on
 * a busy machine where wrk ratios do not.
 *
 *   bash bench/run.sh sampler-ops
 *
 * To turn it into a per-request figure, multiply by the calls per request
 * (bench/sampler.ts prints recorded_aligned per request).
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ROOT } from "../control-plane/src/config-file";
import { ensureSampler } from "../test/harness/fixtures";


function main(): void {
  const so = ensureSampler();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-sampler-ops-"));
  try {
    const exe = path.join(dir, "driver");
    execFileSync("cc", ["-O1", "-g", "-Wl,-z,now", "-o", exe, path.join(ROOT, "test/fixtures/sampler-driver/driver.c"), "-ldl", "-pthread"]);
    const r = JSON.parse(execFileSync(exe, [so, "bench"], { encoding: "utf8" }));
    if (r.armed <= 0) throw new Error(`sampler did not arm in the driver: ${JSON.stringify(r)}`);
    console.log(JSON.stringify(r, null, 2));
    const m = r.malloc_free_ns, p = r.pool_block_ns;
    console.log(`malloc+free:            unhooked ${m.unhooked.toFixed(1)} ns, armed ${m.armed.toFixed(1)} ns (+${(m.armed - m.unhooked).toFixed(1)}), disarmed ${m.disarmed.toFixed(1)} ns`);
    console.log(`pool block alloc+free:  unhooked ${p.unhooked.toFixed(1)} ns, armed ${p.armed.toFixed(1)} ns (+${(p.armed - p.unhooked).toFixed(1)}), disarmed ${p.disarmed.toFixed(1)} ns`);
    console.log(`stack cache: ${r.cache_hits} hits, ${r.unwinds} full unwinds; load average ${fs.readFileSync("/proc/loadavg", "utf8").split(" ")[0]}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main();
