/**
 * Overhead of memdiag on request handling, all measured in one run on one machine:
 *
 *   none     nginx without the include line (same modules loaded), as an OpenResty gateway is
 *            configured: its application already has a content_by_lua location (never requested here)
 *   plain    nginx without the include line and without any Lua directive: what a plain nginx
 *            pays for the include line includes lua-nginx-module's output capture filter, which
 *            any content_by_lua / rewrite_by_lua / access_by_lua installs for every request of
 *            the http block (a header and a body filter; measured ~0.5 % of a static request)
 *   twin     a second instance configured exactly like `none` (A/A): its "loss" is this run's
 *            noise floor between two nginx instances, which no ratio below can resolve
 *   agent    the include line, agent collecting every second
 *   idle     the same nginx instance as `agent`, its agent not collecting (with one worker, the
 *            default): rounds alternate between the two, so agent vs idle is the collection's
 *            cost with everything else equal. Two nginx instances differ by 1-2 % on their own
 *            (the `twin` rows: address-space layout, cache and TLB placement), which is more
 *            than the 1 % target; one instance toggled does not. The instance's own timer is
 *            set to an hour and a memdiag location (/t/loop) runs the same collectAndPublish the
 *            agent's timer runs, every second, while switched on.
 *   deep     the include line, agent collecting every second, and a deep scan started every second
 *            (deep_interval_s 1: the next scan starts 1 s after the previous one ends)
 *   sampler  the include line, agent collecting every second, allocation sampler armed (default rate)
 *
 * Rounds alternate (config order rotated every round), each a short wrk run on loopback with
 * keepalive against a small static file and against a proxied response (proxy_pass, keepalive
 * upstream, to a second server block of the same nginx). Medians over rounds; ratios against
 * `none`, also paired (median over rounds of the ratio within a round: what the verdicts use,
 * because a shared VM drifts by ±10 % between rounds); per-collection worker time (collect_ms,
 * from the snapshots) and deep-scan slices beside. One worker runs on core 1, wrk on core 0.
 * (Pausing the idle instances with SIGSTOP during a run was tried: their timers catching up on
 * resume raised every agent configuration's p99 by 30-150 %.)
 *
 * Then the cost curves:
 *   connections  bench/collect-cost.ts reused (10 → 10,000 held keepalive connections)
 *   heap         collection time and deep-scan time vs glibc heap size (10 MB → 1 GB, inflated
 *                through a test-only location with malloc'ed, touched 4 KB chunks: nginx's request pool size)
 *
 *   npm run bench:overhead            (= bash bench/run.sh overhead)
 *   options (node dist/bench/overhead.js ...): --rounds 8 --seconds 4 --conns 32 --workers 1 --skip-scaling
 *            --paced-ms 1 (load below saturation: each connection pauses 0-2 ms between requests) --heap-mb 10,100,1000 --chunk 4096
 *            --conn-levels 10,1000,10000 --configs agent,deep,sampler (none, twin and plain always run) --paths static,proxy
 *            --warm-s 600 (load the agent's instance that long first: its workers' traces settle)
 *            --slice-ms 0.25 (the agents' slice_ms; default: the agent's default)
 *   MEMDIAG_BENCH_BURN=3.5:1.2 (control): the `agent` rounds run a plain CPU burn instead of the
 *            collection, 3.5 ms of thread CPU per second in slices of 1.2 ms with the same 1 ms
 *            sleep between them: what any work of that size and shape does to p99 here
 * Writes bench/results/overhead-<time>.json (gitignored).
 */
import { spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { BareNginx, Nginx, NginxOptions, httpGet, sleep } from "../test/harness/nginx";
import { median, medianCI95, percentile as pct } from "./stats";
import { wrk as runWrk, WrkRun } from "./wrk";
import { freePort } from "../test/harness/ports";
import { ensureSampler } from "../test/harness/fixtures";
import { ROOT } from "../control-plane/src/config-file";

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : def;
}
const flag = (name: string) => process.argv.includes(`--${name}`);
const ROUNDS = Number(arg("rounds", "8"));
const SECONDS = Number(arg("seconds", "4"));
const CONNS = Number(arg("conns", "32"));
/** > 0: paced load below saturation (bench/wrk.ts pacedMs); 0: wrk as fast as it goes */
const PACED_MS = Number(arg("paced-ms", "0"));
if (!(PACED_MS >= 0 && Number.isInteger(PACED_MS))) throw new Error(`--paced-ms: a whole number of ms >= 0, got ${arg("paced-ms", "0")}`);
/** MEMDIAG_BENCH_BURN "total_ms:slice_ms" (control, see the header), or "" */
const BURN = process.env.MEMDIAG_BENCH_BURN ?? "";
if (BURN !== "" && !/^\d+(\.\d+)?:\d+(\.\d+)?$/.test(BURN)) throw new Error(`MEMDIAG_BENCH_BURN: expected total_ms:slice_ms such as 3.5:1.2, got ${JSON.stringify(BURN)}`);
const WORKERS = Number(arg("workers", "1"));
const HEAP_MB = arg("heap-mb", "10,100,1000").split(",").map(Number);
const CHUNK = Number(arg("chunk", "4096"));
const CONN_LEVELS = arg("conn-levels", "10,1000,10000");
const SKIP_SCALING = flag("skip-scaling");
const ONLY_CONFIGS = arg("configs", "");
/**
 * Seconds of load on the agent's instance before the rounds, collecting as usual. A worker's
 * first few hundred collections also compile the agent's traces, inside their slices (589
 * traces, 103 ms, in the first 300 under saturating proxied load here; see the README); a
 * gateway runs for days. 0: measure from a worker's start.
 */
const WARM_S = Number(arg("warm-s", "0"));
if (!(WARM_S >= 0)) throw new Error(`--warm-s: seconds >= 0, got ${arg("warm-s", "0")}`);
/** > 0: the agents' slice_ms (else the default) */
const SLICE_MS = Number(arg("slice-ms", "0"));
if (!(SLICE_MS >= 0)) throw new Error(`--slice-ms: ms >= 0, got ${arg("slice-ms", "0")}`);

const CONFIGS = ["none", "twin", "plain", "agent", "idle", "deep", "sampler"] as const;
const isBare = (c: Config) => c === "none" || c === "twin" || c === "plain";
/** agent and idle are one instance toggled (needs one worker: the switch reaches the worker that answers) */
const TOGGLED = WORKERS === 1;
/** the instance a config runs on */
const home = (c: Config): Config => (c === "idle" ? "agent" : c);
type Config = (typeof CONFIGS)[number];
const ALL_PATHS = { static: "/static/small.html", proxy: "/proxy" } as const;
type PathName = keyof typeof ALL_PATHS;
const PATHS: Partial<typeof ALL_PATHS> = {};
for (const k of Object.keys(ALL_PATHS) as PathName[]) if (!process.argv.includes("--paths") || process.argv[process.argv.indexOf("--paths") + 1].split(",").includes(k)) (PATHS as any)[k] = ALL_PATHS[k];

interface Run extends WrkRun { cpu_us_per_req?: number }

/** CPU time the nginx workers ran (ns), from /proc/<pid>/schedstat: robust to other load on the machine. */
function workerCpuNs(ngx: Nginx): number {
  let t = 0;
  for (const pid of ngx.workerPids()) t += Number(fs.readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[0]);
  return t;
}

function wrk(port: number, p: string, seconds = SECONDS): Promise<Run> {
  return runWrk(`http://127.0.0.1:${port}${p}`, { seconds, conns: CONNS, core: 0, pacedMs: PACED_MS });
}

async function json(port: number, q: string): Promise<any> {
  const r = await httpGet(port, `/_memdiag${q}`, 600000);
  if (r.status !== 200) throw new Error(`/_memdiag${q}: ${r.status} ${r.body.slice(0, 300)}`);
  return JSON.parse(r.body);
}

function nginxOptions(dir: string, backendPort: number, cfg: Config): NginxOptions {
  return {
    workers: WORKERS,
    workerConnections: 4096,
    agent: isBare(cfg)
      ? undefined
      : { ...(cfg === "deep" ? { interval_s: 1, deep_interval_s: 1 } : cfg === "agent" && TOGGLED ? { interval_s: 3600 } : { interval_s: 1 }), ...(SLICE_MS > 0 ? { slice_ms: SLICE_MS } : {}) },
    http: `
  upstream md_bench_backend { server 127.0.0.1:${backendPort}; keepalive 32; }
  server {
    listen 127.0.0.1:${backendPort};
    keepalive_requests 100000;
    location / { default_type text/plain; return 200 "backend response: a small proxied body\\n"; }
  }`,
    appLocations: `
    location /static/ { root ${dir}; }${cfg === "plain" ? "" : `
    location = /app-lua { content_by_lua_block { ngx.say("an application's Lua handler") } }`}
    location = /proxy {
      proxy_pass http://md_bench_backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }`,
    memdiagLocations: HEAP_LUA + (cfg === "agent" && TOGGLED ? LOOP_LUA : ""),
    // MEMDIAG_BENCH_CORE_DIR=/dir: workers dump core there when they crash (debugging)
    // one worker: it runs on core 1 and wrk on core 0, so the two never fight over a core
    // (most of the run-to-run noise on 2 cores)
    main: [WORKERS === 1 ? "worker_cpu_affinity 10;" : "",
      process.env.MEMDIAG_BENCH_CORE_DIR ? `worker_rlimit_core 2g; working_directory ${process.env.MEMDIAG_BENCH_CORE_DIR};` : ""].join("\n"),
  };
}

/**
 * Test-only location (heap scaling): malloc and touch N MB in chunks of CHUNK bytes (below the
 * mmap threshold: brk heap), never freed (the bench's nginx is stopped afterwards).
 */
const HEAP_LUA = `
    location = /t/inflate {
        content_by_lua_block {
            local ffi = require "ffi"
            pcall(ffi.cdef, "void *malloc(size_t); void free(void *);")
            _G.__md_bench_n = _G.__md_bench_n or 0
            local mb = tonumber(ngx.var.arg_mb) or 0
            local chunk = tonumber(ngx.var.arg_chunk) or 4096
            local n = math.floor(mb * 1048576 / chunk)
            for i = 1, n do
                local p = ffi.C.malloc(chunk - 16)
                if p == nil then ngx.status = 500 ngx.say("malloc failed") return end
                ffi.fill(p, chunk - 16, i % 251)
            end
            _G.__md_bench_n = _G.__md_bench_n + n
            ngx.say(_G.__md_bench_n)
        }
    }`;

/**
 * Bench-only switch of the `agent` instance: ?on=1 starts a timer loop doing what the agent's own
 * timer does (collectAndPublish, then the next one a second after it ends), ?on=0 stops it after
 * the collection in flight. The instance's own timer is set to an hour.
 */
const LOOP_LUA = `
    location = /t/loop {
        content_by_lua_block {
            local S = package.loaded.md_bench_loop or {}
            package.loaded.md_bench_loop = S
            S.on = ngx.var.arg_on == "1"
            if S.on and not S.running then
                S.running = true
                local agent = require("memdiag.agent")
                local burn = "${BURN}"
                local clock = require("memdiag.base.clock")
                local function tick(premature)
                    if premature or not S.on then S.running = false return end
                    if burn ~= "" then
                        local total, slice = burn:match("([%d.]+):([%d.]+)")
                        total, slice = tonumber(total), tonumber(slice)
                        local t0 = clock.cpuMs()
                        while clock.cpuMs() - t0 < total do
                            local s0 = clock.monoMs()
                            while clock.monoMs() - s0 < slice do end
                            ngx.sleep(0.001)
                        end
                    else
                    agent.collectAndPublish(true)
                    end
                    if not ngx.timer.at(1, tick) then S.running = false end
                end
                if not ngx.timer.at(0, tick) then S.running = false end
            end
            ngx.say(S.on and "on" or "off")
        }
    }`;

async function setLoop(ngx: Nginx, on: boolean): Promise<void> {
  const r = await httpGet(ngx.memdiagPort, `/t/loop?on=${on ? 1 : 0}`);
  if (r.status !== 200 || r.body.trim() !== (on ? "on" : "off")) throw new Error(`/t/loop: ${r.status} ${r.body}`);
}

interface Sample { collect_ms: number[]; max_slice_ms: number[]; max_slice_cpu_ms: number[]; scans: { ms_total: number; wall_ms: number; max_slice_ms: number; slices: number; heap_bytes: number; cpu_ms?: number; max_slice_cpu_ms?: number }[] }
const emptySample = (): Sample => ({ collect_ms: [], max_slice_ms: [], max_slice_cpu_ms: [], scans: [] });

/** Poll the worker's snapshots once a second during a run: collect_ms of every distinct seq, every finished deep scan. */
async function pollSnapshots(ngx: Nginx, until: () => boolean, into: Sample): Promise<void> {
  const seen = new Set<string>();
  const scans = new Set<string>();
  while (!until()) {
    const r = await json(ngx.memdiagPort, "").catch(() => undefined);
    for (const w of r?.workers ?? []) {
      const k = `${w.pid}/${w.seq}`;
      if (seen.has(k)) continue;
      seen.add(k);
      into.collect_ms.push(w.collect_ms);
      into.max_slice_ms.push(w.max_slice_ms);
      if (w.max_slice_cpu_ms !== undefined) into.max_slice_cpu_ms.push(w.max_slice_cpu_ms);
      const sc = w.scan;
      if (sc?.state === "done" && !scans.has(`${w.pid}/${sc.started}`)) {
        scans.add(`${w.pid}/${sc.started}`);
        into.scans.push({ ms_total: sc.ms_total, wall_ms: sc.wall_ms, max_slice_ms: sc.max_slice_ms, slices: sc.slices, heap_bytes: sc.heap_bytes, cpu_ms: sc.cpu_ms, max_slice_cpu_ms: sc.max_slice_cpu_ms });
      }
    }
    await sleep(1000);
  }
}

async function measure(cfg: Config, ngx: Nginx, p: PathName, sample: Sample): Promise<Run> {
  let done = false;
  const bg: Promise<void>[] = [];
  if (TOGGLED && (cfg === "agent" || cfg === "idle")) await setLoop(ngx, cfg === "agent");
  // idle is polled too (into a sample nobody reads): the poll is the bench's, and agent vs idle must differ only by the collection
  if (!isBare(cfg)) bg.push(pollSnapshots(ngx, () => done, cfg === "idle" ? emptySample() : sample));
  try {
    const c0 = workerCpuNs(ngx);
    const r = await wrk(ngx.appPort, PATHS[p]!);
    r.cpu_us_per_req = (workerCpuNs(ngx) - c0) / 1000 / r.requests;
    return r;
  } finally {
    done = true;
    await Promise.all(bg);
  }
}

async function sampler(ngx: Nginx, q: string): Promise<any> {
  return json(ngx.memdiagPort, `?sampler=${q}`);
}

/** Collection and deep-scan time vs heap size, one worker, collections on demand. */
async function heapScaling(): Promise<any[]> {
  const ngx = new Nginx({ workers: 1, agent: { interval_s: 3600 }, memdiagLocations: HEAP_LUA });
  await ngx.start();
  const rows: any[] = [];
  try {
    await ngx.snapshots();
    let inflated = 0;
    for (const mb of HEAP_MB) {
      const r = await httpGet(ngx.memdiagPort, `/t/inflate?mb=${mb - inflated}&chunk=${CHUNK}`, 600000);
      if (r.status !== 200) throw new Error(`inflate: ${r.status} ${r.body}`);
      inflated = mb;
      const c: number[] = [], s: number[] = [];
      for (let i = 0; i < 3; i++) await json(ngx.memdiagPort, "?fresh=1");
      let snap: any;
      for (let i = 0; i < 9; i++) {
        snap = (await json(ngx.memdiagPort, "?fresh=1")).workers[0];
        c.push(snap.collect_ms);
        s.push(snap.max_slice_ms);
      }
      const t0 = Date.now();
      const d = (await json(ngx.memdiagPort, "?deep=1")).workers[0];
      const wall = Date.now() - t0;
      const heap = snap.glibc.arena_bytes + snap.glibc.mmap_bytes;
      const row = {
        heap_mb: mb, chunk_bytes: CHUNK, chunks: Number(r.body.trim()), glibc_heap_bytes: heap, rss_bytes: snap.system.rss_bytes,
        collect_ms: median(c), collect_max_slice_ms: median(s),
        deep_ms_total: d.scan.ms_total, deep_wall_ms: d.scan.wall_ms, deep_request_ms: wall, deep_max_slice_ms: d.scan.max_slice_ms,
        deep_slices: d.scan.slices, deep_cpu_ms: d.scan.cpu_ms, deep_max_slice_cpu_ms: d.scan.max_slice_cpu_ms, deep_heap_bytes: d.scan.heap_bytes,
        deep_ns_per_byte: (d.scan.ms_total * 1e6) / Math.max(1, d.scan.heap_bytes),
      };
      rows.push(row);
      console.log(
        `heap ${String(mb).padStart(5)} MB | glibc ${(heap / 1048576).toFixed(0).padStart(5)} MB | collect ${row.collect_ms.toFixed(3)} ms (max slice ${row.collect_max_slice_ms.toFixed(3)}) | ` +
          `deep: worker ${row.deep_ms_total.toFixed(1)} ms, wall ${row.deep_wall_ms.toFixed(0)} ms, ${row.deep_slices} slices, max slice ${row.deep_max_slice_ms.toFixed(3)} ms, ${row.deep_ns_per_byte.toFixed(2)} ns/heap byte`,
      );
    }
    if (ngx.errors().some((l) => /exited on signal/.test(l))) throw new Error("a worker crashed during the heap scaling run");
  } finally {
    await ngx.stop();
  }
  return rows;
}

/** bench/collect-cost.ts, run as is (it owns the connection-count curve). */
function connectionScaling(): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [path.join(ROOT, "dist/bench/collect-cost.js")], {
      env: { ...process.env, MEMDIAG_BENCH_LEVELS: CONN_LEVELS },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.on("exit", (code) => {
      if (code !== 0) return reject(new Error(`collect-cost exited ${code}:\n${out}`));
      const i = out.indexOf("\ncollect-cost");
      resolve(out.slice(i + 1).trim().split("\n"));
    });
  });
}

function fmt(x: number, d = 2): string {
  return Number.isFinite(x) ? x.toFixed(d) : "-";
}

async function main(): Promise<void> {
  const started = new Date();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-bench-"));
  fs.mkdirSync(path.join(dir, "static"));
  fs.writeFileSync(path.join(dir, "static", "small.html"), "<!doctype html><title>memdiag bench</title>" + "x".repeat(450) + "\n");
  fs.chmodSync(dir, 0o755);
  const haveSampler = fs.existsSync(path.join(ROOT, "lua-src/memdiag/deep/sampler"));
  if (haveSampler) ensureSampler();
  const configs: Config[] = CONFIGS.filter(
    (c) => (c !== "sampler" || haveSampler) && (c !== "idle" || TOGGLED) && (!ONLY_CONFIGS || isBare(c) || ONLY_CONFIGS.split(",").includes(home(c))),
  );

  const inst: Partial<Record<Config, Nginx>> = {};
  const samples: Record<string, Sample> = {};
  const runs: Record<string, Run[]> = {};
  const crashes: string[] = [];
  try {
    for (const c of configs) {
      if (home(c) !== c) continue;
      const o = nginxOptions(dir, await freePort(), c);
      inst[c] = isBare(c) ? new BareNginx(o) : new Nginx(o);
      await inst[c]!.start();
      if (!isBare(c)) await inst[c]!.snapshots();
    }
    for (const c of configs) inst[c] = inst[home(c)];
    if (inst.sampler) {
      // the sampler acts on the answering worker: arm until every worker answered armed
      const armed = new Set<number>();
      for (let i = 0; i < 100 && armed.size < WORKERS; i++) {
        const st = await sampler(inst.sampler, "status");
        if (!st.armed) await sampler(inst.sampler, "arm");
        else armed.add(st.pid);
      }
      if (armed.size < WORKERS) throw new Error(`sampler armed in ${armed.size} of ${WORKERS} workers`);
    }
    // warm-up (JIT, connection pools), not recorded
    for (const c of configs) for (const p of Object.keys(PATHS) as PathName[]) await wrk(inst[c]!.appPort, PATHS[p]!, 1);
    if (WARM_S > 0 && inst.agent) {
      process.stderr.write(`warming the agent's workers: ${WARM_S} s of load, collecting every second\n`);
      // one worker: its collection loop is the bench's switch (see LOOP_LUA), on for the warm-up
      if (TOGGLED) await setLoop(inst.agent, true);
      const t0 = Date.now();
      while (Date.now() - t0 < WARM_S * 1000) for (const p of Object.keys(PATHS) as PathName[]) await wrk(inst.agent.appPort, PATHS[p]!, 5);
    }

    for (let r = 0; r < ROUNDS; r++) {
      for (const p of Object.keys(PATHS) as PathName[]) {
        for (let k = 0; k < configs.length; k++) {
          const c = configs[(k + r) % configs.length];
          const key = `${c}/${p}`;
          samples[c] ??= emptySample();
          const res = await measure(c, inst[c]!, p, samples[c]);
          (runs[key] ??= []).push(res);
          process.stderr.write(`round ${r + 1} ${p.padEnd(6)} ${c.padEnd(7)} ${res.rps.toFixed(0).padStart(6)} req/s  p50 ${res.p50ms.toFixed(3)} ms  p99 ${res.p99ms.toFixed(3)} ms  worker cpu ${res.cpu_us_per_req!.toFixed(2)} µs/req  errors ${res.errors}\n`);
        }
      }
    }
    const sstatus = inst.sampler ? await sampler(inst.sampler, "status") : undefined;
    for (const c of configs) {
      if (home(c) !== c) continue;
      for (const l of inst[c]!.errors()) if (/exited on signal/.test(l)) crashes.push(`${c}: ${l}`);
      // what the dying worker wrote to stderr (glibc's abort message goes there, not to the error log)
      const err = String((inst[c] as unknown as { stderr: string }).stderr ?? "").trim();
      if (crashes.some((x) => x.startsWith(`${c}:`)) && err) crashes.push(`${c} stderr: ${err.slice(-2000)}`);
    }

    // ---- table
    const table: any[] = [];
    for (const p of Object.keys(PATHS) as PathName[]) {
      const base = runs[`none/${p}`];
      const plain = runs[`plain/${p}`];
      const bRps = median(base.map((x) => x.rps)), bP50 = median(base.map((x) => x.p50ms)), bP99 = median(base.map((x) => x.p99ms));
      const bCpu = median(base.map((x) => x.cpu_us_per_req!));
      const bP99Spread = Math.max(...base.map((x) => x.p99ms)) - Math.min(...base.map((x) => x.p99ms));
      for (const c of configs) {
        const rs = runs[`${c}/${p}`];
        const s = samples[c] ?? emptySample();
        const cpu = median(rs.map((x) => x.cpu_us_per_req!));
        const rps = median(rs.map((x) => x.rps)), p50 = median(rs.map((x) => x.p50ms)), p99 = median(rs.map((x) => x.p99ms));
        // paired: each round runs every config back to back, so the ratio within a round
        // cancels the slow drifts of a shared VM that the medians of each config keep
        const paired = median(rs.map((x, i) => x.rps / base[i].rps));
        const pairedP99 = median(rs.map((x, i) => x.p99ms / base[i].p99ms));
        const pairedPlain = plain ? median(rs.map((x, i) => x.rps / plain[i].rps)) : NaN;
        // the same instance with its agent idle, round by round (agent only): loss and p99 change with 95 % intervals
        const idle = c === "agent" ? runs[`idle/${p}`] : undefined;
        const lossIdle = idle ? rs.map((x, i) => (1 - x.rps / idle[i].rps) * 100) : [];
        const p99Idle = idle ? rs.map((x, i) => x.p99ms - idle[i].p99ms) : [];
        const lossNone = rs.map((x, i) => (1 - x.rps / base[i].rps) * 100);
        table.push({
          path: p, config: c, rounds: rs.length,
          rps, p50_ms: p50, p99_ms: p99, errors: rs.reduce((a, b) => a + b.errors, 0),
          cpu_us_per_req: cpu, cpu_ratio: cpu / bCpu, cpu_overhead_pct: (cpu / bCpu - 1) * 100,
          rps_ratio: rps / bRps, throughput_loss_pct: (1 - rps / bRps) * 100,
          paired_rps_ratio: paired, paired_loss_pct: (1 - paired) * 100, paired_p99_ratio: pairedP99,
          paired_loss_vs_plain_pct: (1 - pairedPlain) * 100,
          paired_loss_ci95: medianCI95(lossNone),
          loss_vs_idle_pct: idle ? median(lossIdle) : NaN, loss_vs_idle_ci95: idle ? medianCI95(lossIdle) : undefined,
          p99_vs_idle_ms: idle ? median(p99Idle) : NaN, p99_vs_idle_ci95: idle ? medianCI95(p99Idle) : undefined,
          p50_delta_ms: p50 - bP50, p99_delta_ms: p99 - bP99, p99_ratio: p99 / bP99, baseline_p99_spread_ms: bP99Spread,
          rps_rounds: rs.map((x) => Math.round(x.rps)), p99_rounds: rs.map((x) => x.p99ms),
          collect_ms_p50: median(s.collect_ms), collect_ms_p99: pct(s.collect_ms, 0.99), collect_max_slice_ms: s.max_slice_ms.length ? Math.max(...s.max_slice_ms) : NaN,
          // each collection's longest slice (wall): what a request arriving during it waits at most
          collect_slice_p50_ms: median(s.max_slice_ms), collect_slice_p90_ms: pct(s.max_slice_ms, 0.9),
          collect_slice_cpu_p50_ms: median(s.max_slice_cpu_ms), collect_slice_cpu_p90_ms: pct(s.max_slice_cpu_ms, 0.9),
          collect_slice_cpu_max_ms: s.max_slice_cpu_ms.length ? Math.max(...s.max_slice_cpu_ms) : NaN,
          collections: s.collect_ms.length,
          deep_scans: s.scans.length, deep_ms_total_p50: median(s.scans.map((x) => x.ms_total)), deep_wall_ms_p50: median(s.scans.map((x) => x.wall_ms)),
          deep_max_slice_ms: s.scans.length ? Math.max(...s.scans.map((x) => x.max_slice_ms)) : NaN,
          // thread CPU time of the scan and of its longest slice (when the agent reports it): wall time minus preemption
          deep_cpu_ms_p50: median(s.scans.filter((x) => x.cpu_ms !== undefined).map((x) => x.cpu_ms!)),
          deep_max_slice_cpu_ms: s.scans.some((x) => x.max_slice_cpu_ms !== undefined) ? Math.max(...s.scans.filter((x) => x.max_slice_cpu_ms !== undefined).map((x) => x.max_slice_cpu_ms!)) : NaN,
        });
      }
    }

    // ---- targets
    const verdicts: string[] = [];
    const plainCost: Record<string, number> = {};
    const noise: Record<string, number> = {};
    for (const row of table) if (row.config === "plain") plainCost[row.path] = -row.paired_loss_pct;
    for (const row of table) if (row.config === "twin") noise[row.path] = Math.abs(row.paired_loss_pct);
    // within the twin's noise of the target is not a pass, and not a measured miss either
    const judge = (loss: number, target: number, p99ok: boolean, path: string) =>
      !p99ok ? "MISS" : loss <= target ? "PASS" : loss <= target + (noise[path] ?? 0) ? "UNRESOLVED" : "MISS";
    for (const row of table) {
      const head = `${fmt(row.paired_loss_pct)} % loss paired`;
      const cpu = `medians ${fmt(row.throughput_loss_pct)} %; worker CPU per request ${fmt(row.cpu_overhead_pct)} %`;
      if (row.config === "agent" && row.loss_vs_idle_ci95) {
        // the collection's cost, everything else equal: decided by the 95 % interval of the median
        const [lo, hi] = row.loss_vs_idle_ci95 as [number, number];
        const [plo, phi] = row.p99_vs_idle_ci95 as [number, number];
        const p99ok = plo <= 0; // no measurable p99 increase: the interval reaches zero or below
        const v = !p99ok ? "MISS" : hi <= 1 ? "PASS" : lo > 1 ? "MISS" : "UNRESOLVED";
        verdicts.push(
          `${v} agent/${row.path}: collecting every second vs the same nginx idle: ${fmt(row.loss_vs_idle_pct)} % loss paired, 95 % interval [${fmt(lo)}, ${fmt(hi)}] % (≤ 1 %); ` +
            `p99 ${row.p99_vs_idle_ms >= 0 ? "+" : ""}${fmt(row.p99_vs_idle_ms, 3)} ms, interval [${fmt(plo, 3)}, ${fmt(phi, 3)}] ms (no measurable change: reaches 0)`,
        );
        verdicts.push(`     agent/${row.path} vs none (another instance): ${head}, interval [${fmt(row.paired_loss_ci95[0])}, ${fmt(row.paired_loss_ci95[1])}] % (${cpu}); p99 ${row.p99_delta_ms >= 0 ? "+" : ""}${fmt(row.p99_delta_ms, 3)} ms`);
        verdicts.push(`     agent/${row.path}: the collection itself takes ${fmt(row.collect_ms_p50, 2)} ms of the worker per second (median of ${row.collections}) = ${fmt(row.collect_ms_p50 / 10, 2)} % of its time`);
        verdicts.push(`     agent/${row.path}: each collection's longest slice (wall, the event loop waits on it): median ${fmt(row.collect_slice_p50_ms, 2)} ms, p90 ${fmt(row.collect_slice_p90_ms, 2)} ms, max ${fmt(row.collect_max_slice_ms, 2)} ms; in the worker's CPU time median ${fmt(row.collect_slice_cpu_p50_ms, 2)} ms, p90 ${fmt(row.collect_slice_cpu_p90_ms, 2)} ms, max ${fmt(row.collect_slice_cpu_max_ms, 2)} ms`);
      } else if (row.config === "agent") {
        const v = judge(row.paired_loss_pct, 1, row.p99_delta_ms <= Math.max(row.baseline_p99_spread_ms, 0.05), row.path);
        verdicts.push(`${v} agent/${row.path}: ${head} (≤ 1 %; ${cpu}), p99 ${row.p99_delta_ms >= 0 ? "+" : ""}${fmt(row.p99_delta_ms, 3)} ms (baseline spread ${fmt(row.baseline_p99_spread_ms, 3)} ms)`);
        // direct accounting, free of the instance noise: the collection's own slices per 1 s interval
        verdicts.push(`     agent/${row.path}: the collection itself takes ${fmt(row.collect_ms_p50, 2)} ms of the worker per second (median of ${row.collections}) = ${fmt(row.collect_ms_p50 / 10, 2)} % of its time`);
      }
      if (row.config === "deep") {
        const v = judge(row.paired_loss_pct, 3, row.p99_delta_ms <= 1.5, row.path);
        verdicts.push(`${v} deep/${row.path}: ${head} (≤ 3 %; ${cpu}), p99 ${row.p99_delta_ms >= 0 ? "+" : ""}${fmt(row.p99_delta_ms, 3)} ms (≤ +1.5 ms)`);
      }
      if (row.config === "sampler") {
        // the sampler's target, against no agent at all (the sampler needs the agent)
        // p99 paired like throughput: the medians of p99 drift between rounds by more than 5 %
        const v = judge(row.paired_loss_pct, 3, row.paired_p99_ratio <= 1.05, row.path);
        verdicts.push(`${v} sampler/${row.path}: ${head} (≤ 3 %; ${cpu}), p99 ${fmt((row.paired_p99_ratio - 1) * 100)} % paired (≤ +5 %; medians ${fmt((row.p99_ratio - 1) * 100)} %)`);
      }
      if (row.config === "idle") {
        verdicts.push(`     idle/${row.path}: the include line with its agent not collecting vs none (another instance): ${head}, interval [${fmt(row.paired_loss_ci95[0])}, ${fmt(row.paired_loss_ci95[1])}] %`);
      }
      if (row.config === "twin") {
        verdicts.push(`NOISE twin/${row.path}: an instance identical to none shows ${head} (interval [${fmt(row.paired_loss_ci95[0])}, ${fmt(row.paired_loss_ci95[1])}] %), p99 ${fmt((row.paired_p99_ratio - 1) * 100)} % paired: differences of that size are not resolved by this run`);
      }
      if (!isBare(row.config) && Number.isFinite(row.paired_loss_vs_plain_pct)) {
        verdicts.push(`     ${row.config}/${row.path} on a plain nginx (no Lua directive before the include): ${fmt(row.paired_loss_vs_plain_pct)} % loss paired, of which ${fmt(plainCost[row.path])} % is lua-nginx-module's capture filter (none vs plain)`);
      }
    }

    let connRows: string[] = [];
    let heapRows: any[] = [];
    for (const c of configs) if (home(c) === c) await inst[c]!.stop();
    if (!SKIP_SCALING) {
      console.error("\n== scaling: connections (bench/collect-cost.ts)");
      connRows = await connectionScaling();
      console.error("\n== scaling: heap size");
      heapRows = await heapScaling();
    }

    const machine = { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, mem_gb: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version };
    const out = {
      bench: "overhead", started: started.toISOString(), finished: new Date().toISOString(), machine,
      settings: { rounds: ROUNDS, seconds: SECONDS, conns: CONNS, paced_ms: PACED_MS, warm_s: WARM_S, slice_ms: SLICE_MS || "default", wrk_threads: 1, nginx_workers: WORKERS, interval_s: 1, paths: PATHS },
      overhead: table, verdicts, sampler: sstatus && { armed: sstatus.armed, sampled: sstatus.sampled, rate: sstatus.rate },
      scaling: { connections: connRows, heap: heapRows }, worker_crashes: crashes,
    };
    fs.mkdirSync(path.join(ROOT, "bench/results"), { recursive: true });
    const file = path.join(ROOT, "bench/results", `overhead-${started.toISOString().replace(/[:.]/g, "-")}.json`);
    fs.writeFileSync(file, JSON.stringify(out, null, 2));

    // ---- print
    console.log(`\noverhead: ${ROUNDS} rounds × ${SECONDS} s per config and path, alternating; wrk -t1 -c${CONNS} keepalive on loopback, ${PACED_MS > 0 ? `paced (each connection waits 0-${2 * PACED_MS} ms between requests: below saturation)` : "saturating (no pause between requests)"}; ${WORKERS} nginx worker(s)${WARM_S > 0 ? `; the agent's workers warmed by ${WARM_S} s of load first` : ""}`);
    console.log(`machine: ${machine.cpus} × ${machine.cpu}, ${machine.mem_gb} GB, Linux ${machine.kernel}`);
    const H = ["path", "config", "req/s", "ratio", "loss %", "paired loss %", "cpu µs/req", "cpu +%", "p50 ms", "p99 ms", "Δp99 ms", "errors", "collect ms p50/p99", "max slice ms", "deep scans (worker ms p50)"];
    const lines = table.map((r) => [
      r.path, r.config, r.rps.toFixed(0), r.rps_ratio.toFixed(4), fmt(r.throughput_loss_pct), fmt(r.paired_loss_pct), fmt(r.cpu_us_per_req, 2), fmt(r.cpu_overhead_pct), fmt(r.p50_ms, 3), fmt(r.p99_ms, 3),
      (r.p99_delta_ms >= 0 ? "+" : "") + fmt(r.p99_delta_ms, 3), String(r.errors),
      r.collections ? `${fmt(r.collect_ms_p50, 3)}/${fmt(r.collect_ms_p99, 3)} (n=${r.collections})` : "-",
      r.collections ? fmt(Math.max(r.collect_max_slice_ms, r.deep_max_slice_ms || 0), 3) : "-",
      r.deep_scans ? `${r.deep_scans} (${fmt(r.deep_ms_total_p50, 1)}${Number.isFinite(r.deep_cpu_ms_p50) ? `; cpu ${fmt(r.deep_cpu_ms_p50, 1)}, max slice cpu ${fmt(r.deep_max_slice_cpu_ms, 2)}` : ""})` : "-",
    ]);
    const w = H.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
    console.log(H.map((h, i) => h.padEnd(w[i])).join(" | "));
    console.log(w.map((n) => "-".repeat(n)).join("-|-"));
    for (const l of lines) console.log(l.map((x, i) => (i < 2 ? x.padEnd(w[i]) : x.padStart(w[i]))).join(" | "));
    console.log("");
    for (const v of verdicts) console.log(v);
    if (connRows.length) {
      console.log("\ncollection time vs active connections:");
      for (const l of connRows) console.log("  " + l);
    }
    if (heapRows.length) {
      console.log("\ncollection and deep-scan time vs glibc heap size:");
      for (const r of heapRows) {
        console.log(`  heap ${String(r.heap_mb).padStart(5)} MB (glibc ${(r.glibc_heap_bytes / 1048576).toFixed(0)} MB, ${r.chunks} chunks of ${r.chunk_bytes} B): collect ${fmt(r.collect_ms, 3)} ms | deep scan ${fmt(r.deep_ms_total, 1)} ms worker, ${fmt(r.deep_wall_ms, 0)} ms wall, ${r.deep_slices} slices, max slice ${fmt(r.deep_max_slice_ms, 3)} ms${r.deep_cpu_ms !== undefined ? ` (cpu: ${fmt(r.deep_cpu_ms, 1)} ms total, max slice ${fmt(r.deep_max_slice_cpu_ms, 3)} ms)` : ""}, ${fmt(r.deep_ns_per_byte, 2)} ns/byte`);
      }
    }
    console.log(crashes.length ? `\nWORKER CRASHES:\n${crashes.join("\n")}` : "\nno worker crashed");
    console.log(`results: ${path.relative(ROOT, file)}`);
  } finally {
    for (const c of configs) if (home(c) === c) await inst[c]?.stop().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
