/**
 * Sampler overhead: wrk throughput and p99 latency against the same nginx
 * build in three states, measured in the same run, interleaved in rounds:
 *   absent    nginx without the memdiag include (same modules loaded)
 *   disarmed  memdiag agent, sampler loaded, armed once and disarmed
 *   armed     same instance, sampler armed at the default rate (512 KiB, pool blocks in full)
 * One worker per nginx pinned to core 1, wrk with one thread pinned to core 0: the machine has 2 cores.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/sampler.js [--rounds 5] [--seconds 5] [--path /ok] [--conns 32] [--rate BYTES]
 *   --path /cj: a Lua handler encoding JSON with lua-cjson (malloc/realloc/free through cjson.so's GOT)
 * Prints the medians and the ratios; targets: armed ≤ 3 % throughput loss, ≤ 5 % p99 increase.
 * Also the worker's CPU time per request (from /proc/<pid>/stat), which stays meaningful when
 * other jobs load the machine and throughput/p99 do not.
 */
import { execFile } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { BareNginx, Nginx } from "../test/harness/nginx";
import { median } from "./stats";
import { wrk as runWrk } from "./wrk";
import { ensureSampler, LEAKY_LOCATIONS, leakyLoadModule, samplerCall as sampler } from "../test/harness/fixtures";

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : def;
}
const ROUNDS = Number(arg("rounds", "5"));
const SECONDS = Number(arg("seconds", "5"));
const PATH = arg("path", "/ok");
const CONNS = Number(arg("conns", "32"));
const RATE = arg("rate", "");

interface Run { rps: number; p99ms: number; p50ms: number; errors: number; cpu_us: number }

/** utime + stime of a process in seconds (clock ticks of 10 ms) */
function cpuSeconds(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** wrk against the nginx; cpu_us = the worker's CPU time per request (robust when other jobs share the machine) */
async function wrk(ngx: Nginx): Promise<Run> {
  const pid = ngx.workerPids()[0];
  const c0 = cpuSeconds(pid);
  const r = await runWrk(`http://127.0.0.1:${ngx.appPort}${PATH}`, { seconds: SECONDS, conns: CONNS, core: 0 });
  return { rps: r.rps, p99ms: r.p99ms, p50ms: r.p50ms, errors: r.errors, cpu_us: ((cpuSeconds(pid) - c0) / r.requests) * 1e6 };
}

/**
 * Share of the worker's CPU samples (perf, all threads) spent in the sampler's own code
 * (libmemdiag_sampler.so, plus libgcc_s: the unwinder it calls) during one armed wrk run.
 * A direct overhead figure that does not depend on what else runs on the machine.
 */
async function perfShare(ngx: Nginx): Promise<{ sampler_pct: number; unwinder_pct: number } | undefined> {
  const pid = ngx.workerPids()[0];
  const data = path.join(fs.mkdtempSync(path.join(require("os").tmpdir(), "memdiag-perf-")), "perf.data");
  const rec = execFile("perf", ["record", "-q", "-F", "4000", "-p", String(pid), "-o", data, "--", "sleep", String(SECONDS)]);
  const recDone = new Promise<void>((r) => rec.on("exit", () => r()));
  await wrk(ngx).catch(() => undefined);
  await recDone;
  const out = await new Promise<string>((resolve) =>
    execFile("perf", ["report", "-i", data, "--stdio", "--sort", "dso", "--no-children"], { encoding: "utf8", maxBuffer: 64 << 20 }, (err, stdout) => resolve(err ? "" : stdout)),
  );
  if (process.argv.includes("--perf-syms")) {
    // where inside the sampler the time goes (symbol level), for tuning the hooks
    const syms = await new Promise<string>((resolve) =>
      execFile("perf", ["report", "-i", data, "--stdio", "--sort", "dso,sym", "--no-children"], { encoding: "utf8", maxBuffer: 64 << 20 }, (err, stdout) => resolve(err ? "" : stdout)),
    );
    process.stderr.write(syms.split("\n").filter((l) => /%/.test(l)).slice(0, 40).join("\n") + "\n");
  }
  // --perf-keep FILE: keep the armed run's perf.data (perf annotate -i FILE record)
  const keep = arg("perf-keep", "");
  if (keep) fs.copyFileSync(data, keep);
  fs.rmSync(path.dirname(data), { recursive: true, force: true });
  if (!out) return undefined;
  const pct = (re: RegExp) => {
    const m = out.split("\n").find((l) => re.test(l));
    return m ? Number(/([\d.]+)%/.exec(m)![1]) : 0;
  };
  return { sampler_pct: pct(/libmemdiag_sampler\.so/), unwinder_pct: pct(/libgcc_s\.so/) };
}


async function main(): Promise<void> {
  ensureSampler();
  const main = leakyLoadModule();
  // /ok: the cheapest request (worst case for relative overhead); /cj: a Lua handler with lua-cjson (malloc/realloc/free)
  // /static/small.html: the overhead bench's static file (open, fstat, sendfile, close per request)
  const staticDir = fs.mkdtempSync(path.join(require("os").tmpdir(), "memdiag-bench-static-"));
  fs.mkdirSync(path.join(staticDir, "static"));
  fs.chmodSync(staticDir, 0o755);
  fs.writeFileSync(path.join(staticDir, "static", "small.html"), "<!doctype html><title>memdiag bench</title>" + "x".repeat(450) + "\n");
  const locations = `${LEAKY_LOCATIONS}
    location /static/ { root ${staticDir}; }
    location = /cj { content_by_lua_block { ngx.say(require("cjson").encode({ a = string.rep("x", 2000), b = { 1, 2, 3 }, c = ngx.var.request_uri })) } }`;
  // the worker on core 1, wrk on core 0: the two never fight over a core, which on
  // 2 cores is most of the run-to-run noise (other processes still can)
  const opts = { workers: 1, workerConnections: 4096, main: `${main}\nworker_cpu_affinity 10;`, appLocations: locations, agent: { interval_s: 5 } };
  const agent = new Nginx(opts);
  const bare = new BareNginx(opts);
  await agent.start();
  await bare.start();
  const results: Record<string, Run[]> = { absent: [], disarmed: [], armed: [] };
  let stats: any;
  try {
    // load the sampler once, so "disarmed" means loaded and disarmed
    await sampler(agent, "arm");
    await sampler(agent, "disarm");
    await sampler(agent, "clear");
    // warm both
    await wrk(agent);
    await wrk(bare);
    const order = ["absent", "disarmed", "armed"];
    for (let r = 0; r < ROUNDS; r++) {
      for (let k = 0; k < order.length; k++) {
        const v = order[(k + r) % order.length];
        if (v === "armed") await sampler(agent, RATE ? `arm&sampler_rate=${RATE}` : "arm");
        const res = await wrk(v === "absent" ? bare : agent);
        if (v === "armed") {
          stats = await sampler(agent, "status");
          await sampler(agent, "disarm");
          await sampler(agent, "clear");
        }
        results[v].push(res);
        process.stderr.write(`round ${r + 1} ${v.padEnd(8)} ${res.rps.toFixed(0)} req/s  p50 ${res.p50ms.toFixed(3)} ms  p99 ${res.p99ms.toFixed(3)} ms  worker cpu ${res.cpu_us.toFixed(2)} us/req  errors ${res.errors}\n`);
      }
    }
    let perf: { sampler_pct: number; unwinder_pct: number } | undefined;
    if (!process.argv.includes("--no-perf")) {
      await sampler(agent, RATE ? `arm&sampler_rate=${RATE}` : "arm");
      perf = await perfShare(agent).catch(() => undefined);
      await sampler(agent, "disarm");
      await sampler(agent, "clear");
    }
    const crashed = [agent, bare].some((n) => n.errors().some((l) => /exited on signal/.test(l)));
    const m = (v: string, f: keyof Run) => median(results[v].map((x) => x[f]));
    const summary = {
      path: PATH, rounds: ROUNDS, seconds: SECONDS, conns: CONNS, mean_bytes: stats?.mean_bytes,
      rps: { absent: m("absent", "rps"), disarmed: m("disarmed", "rps"), armed: m("armed", "rps") },
      p99_ms: { absent: m("absent", "p99ms"), disarmed: m("disarmed", "p99ms"), armed: m("armed", "p99ms") },
      worker_cpu_us_per_request: { absent: m("absent", "cpu_us"), disarmed: m("disarmed", "cpu_us"), armed: m("armed", "cpu_us") },
      // paired: median over rounds of the ratio within a round (the VM drifts ±10 % between rounds)
      paired: {
        armed_vs_absent_throughput: median(results.armed.map((x, i) => x.rps / results.absent[i].rps)),
        disarmed_vs_absent_throughput: median(results.disarmed.map((x, i) => x.rps / results.absent[i].rps)),
        armed_vs_disarmed_throughput: median(results.armed.map((x, i) => x.rps / results.disarmed[i].rps)),
        armed_vs_absent_p99: median(results.armed.map((x, i) => x.p99ms / results.absent[i].p99ms)),
      },
      ratios: {
        armed_vs_absent_throughput: m("armed", "rps") / m("absent", "rps"),
        disarmed_vs_absent_throughput: m("disarmed", "rps") / m("absent", "rps"),
        armed_vs_disarmed_throughput: m("armed", "rps") / m("disarmed", "rps"),
        armed_vs_absent_p99: m("armed", "p99ms") / m("absent", "p99ms"),
        disarmed_vs_absent_p99: m("disarmed", "p99ms") / m("absent", "p99ms"),
        armed_vs_absent_cpu_per_request: m("armed", "cpu_us") / m("absent", "cpu_us"),
        armed_vs_disarmed_cpu_per_request: m("armed", "cpu_us") / m("disarmed", "cpu_us"),
        disarmed_vs_absent_cpu_per_request: m("disarmed", "cpu_us") / m("absent", "cpu_us"),
      },
      armed_last_round: stats && { sampled: stats.sampled, recorded_aligned: stats.recorded_aligned, unwinds: stats.unwinds, stack_cache_hits: stats.stack_cache_hits, backtrace_ms: stats.backtrace_ms, armed_s: stats.armed_s, drops: stats.drops },
      armed_worker_cpu_in_sampler_pct: perf ? perf.sampler_pct + perf.unwinder_pct : null,
      armed_worker_cpu_in_sampler_detail: perf ?? null,
      errors: Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v.reduce((a, b) => a + b.errors, 0)])),
      worker_crash: crashed,
    };
    console.log(JSON.stringify(summary, null, 2));
    const loss = (1 - summary.paired.armed_vs_absent_throughput) * 100;
    const p99 = (summary.paired.armed_vs_absent_p99 - 1) * 100;
    const cpu = (summary.ratios.armed_vs_disarmed_cpu_per_request - 1) * 100;
    console.log(`armed vs absent, paired: ${loss.toFixed(1)} % throughput loss (target ≤ 3 %), p99 ${p99 >= 0 ? "+" : ""}${p99.toFixed(1)} % (target ≤ 5 %); ` +
      `armed vs disarmed, paired: ${((1 - summary.paired.armed_vs_disarmed_throughput) * 100).toFixed(1)} % throughput loss; ` +
      `medians: ${((1 - summary.ratios.armed_vs_absent_throughput) * 100).toFixed(1)} % loss, p99 ${((summary.ratios.armed_vs_absent_p99 - 1) * 100).toFixed(1)} %; ` +
      `worker CPU per request armed vs disarmed ${cpu >= 0 ? "+" : ""}${cpu.toFixed(1)} %; ` +
      `disarmed vs absent: ${((1 - summary.ratios.disarmed_vs_absent_throughput) * 100).toFixed(1)} % throughput loss, ` +
      `CPU/request ${((summary.ratios.disarmed_vs_absent_cpu_per_request - 1) * 100).toFixed(1)} %`);
    if (perf) console.log(`armed: ${(perf.sampler_pct + perf.unwinder_pct).toFixed(2)} % of the worker's CPU samples in the sampler (libmemdiag_sampler.so ${perf.sampler_pct} %, libgcc_s unwinder ${perf.unwinder_pct} %) (perf)`);
    const load = fs.readFileSync("/proc/loadavg", "utf8").split(" ")[0];
    console.log(`load average during the run: ${load} on ${require("os").cpus().length} cores (throughput/p99 ratios are only meaningful on an otherwise idle machine)`);
    if (process.env.BENCH_OUT) fs.writeFileSync(process.env.BENCH_OUT, JSON.stringify(summary, null, 2));
  } finally {
    await agent.stop();
    await bare.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
