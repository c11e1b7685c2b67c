/**
 * Control-plane ingest throughput and diff latency.
 *
 * Starts `memdiag serve` (dist/control-plane/src/cli.js) as its own process on a
 * fresh SQLite file, connects N simulated workers over websockets (hello, then
 * realistic snapshots: ≈7 KB plain, ≈12 KB every 10th a deep scan with unrooted
 * groups and size classes), each keeping a few snapshots in flight and sending
 * the next on every ack. Reports:
 *   snapshots/s     acks received per second over the measured interval
 *   ingest→stored   server side: frame received → transaction committed (p50/p99, /api/health)
 *   send→ack        client side round trip (p50/p99)
 *   diff            GET /api/diff?a=&b= of two deep snapshots (p50/p99 ms, HTTP included) and the server-side compute
 *   RSS             of the control-plane process after the run (and its peak)
 * Targets: ≥ 2,000 snapshots/s, p99 ingest→stored ≤ 50 ms, diff ≤ 5 ms.
 *
 *   bash bench/run.sh ingest        options: --workers 32 --seconds 10 --inflight 4 --deep-every 10
 */
import { ChildProcess } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import WebSocket from "ws";
import { buildSnapshot, identityOf, defaultSizeClasses } from "../test/fixtures/snapshots";
import { serveForBench } from "./serve";
import { percentile as pct } from "./stats";

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : def;
}
const WORKERS = Number(arg("workers", "32"));
const SECONDS = Number(arg("seconds", "10"));
const INFLIGHT = Number(arg("inflight", "4"));
const DEEP_EVERY = Number(arg("deep-every", "10"));
const WARMUP_S = 2;

const f1 = (x: number): string => x.toFixed(1);
const f2 = (x: number): string => x.toFixed(2);

/** user + system CPU of a process (ms), from /proc/<pid>/stat */
function procCpuMs(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return ((Number(rest[11]) + Number(rest[12])) * 1000) / 100; // utime, stime in clock ticks (100/s)
}

function procKb(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

async function startServer(dir: string): Promise<{ proc: ChildProcess; base: string }> {
  const nodeArgs = (process.env.CP_NODE_ARGS ?? "").split(" ").filter(Boolean);
  return serveForBench(path.join(dir, "bench.db"), path.join(dir, "none.json"), [], nodeArgs);
}

interface Sim {
  ws: WebSocket;
  pid: number;
  seq: number;
  sent: Map<number, number>;
  plain: Record<string, any>;
  deep: Record<string, any>;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-bench-"));
  const { proc, base } = await startServer(dir);
  const lat: number[] = [];
  let acks = 0, errors = 0, measuring = false;
  let stopSending = false;
  const sims: Sim[] = [];
  const t0 = Date.now() / 1000;
  for (let w = 0; w < WORKERS; w++) {
    const pid = 20000 + w;
    const unrooted = Array.from({ length: 8 }, (_, i) => ({ signature: `${16384 >> (i % 3)}|ngx_mod${i}_cleanup|.bss+0x${(i * 64).toString(16)}`, owner: `ngx_http_mod${i}_module.so (.bss+0x${(i * 64).toString(16)})`, pools: 2 + i, block_bytes: (2 + i) * 16384, large_blocks: i, large_bytes: i * 300000, cleanups: [`ngx_mod${i}_cleanup`] }));
    const sim: Sim = {
      ws: new WebSocket(`ws://${base}/ingest`, { perMessageDeflate: false }), pid, seq: 0, sent: new Map(),
      plain: buildSnapshot({ pid, worker_id: w, time: t0 }), deep: buildSnapshot({ pid, worker_id: w, time: t0, deep: true, unrooted, size_classes: defaultSizeClasses() }),
    };
    sims.push(sim);
  }
  // frames are prebuilt templates with seq/time spliced in, so the simulated agents cost little CPU
  const template = (snap: Record<string, any>): string[] => {
    snap.seq = 999999991;
    snap.time = 999999992.5;
    return JSON.stringify({ type: "snapshot", seq: 999999991, snapshot: snap }).split(/999999991|999999992\.5/);
  };
  const templates = sims.map((s) => ({ plain: template(s.plain), deep: template(s.deep) }));
  const sendNext = (s: Sim): void => {
    if (stopSending) return;
    s.seq++;
    const parts = s.seq % DEEP_EVERY === 0 ? templates[s.pid - 20000].deep : templates[s.pid - 20000].plain;
    const seq = String(s.seq), time = String(t0 + s.seq * 0.01);
    // parts: [.. "seq": ] seq [.. "seq": ] seq [.. "time": ] time [..]
    s.sent.set(s.seq, performance.now());
    s.ws.send(parts[0] + seq + parts[1] + seq + parts[2] + time + parts[3]);
  };
  await Promise.all(sims.map((s, w) => new Promise<void>((resolve, reject) => {
    s.ws.on("error", reject);
    s.ws.on("open", () => s.ws.send(JSON.stringify({ type: "hello", protocol: 1, token: "", agent: identityOf({ pid: s.pid, worker_id: w }) })));
    s.ws.on("message", (d) => {
      const m = JSON.parse(d.toString());
      if (m.type === "welcome") {
        resolve();
        return;
      }
      if (m.type === "ack") {
        const at = s.sent.get(m.seq);
        s.sent.delete(m.seq);
        if (measuring && at !== undefined) {
          acks++;
          lat.push(performance.now() - at);
        }
        sendNext(s);
      } else if (m.type === "error") {
        errors++;
        sendNext(s);
      }
    });
  })));
  for (const s of sims) for (let i = 0; i < INFLIGHT; i++) sendNext(s);
  await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
  measuring = true;
  const start = performance.now();
  const cpu0 = procCpuMs(proc.pid!), cli0 = process.cpuUsage();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  measuring = false;
  const elapsed = (performance.now() - start) / 1000;
  const srvCpu = procCpuMs(proc.pid!) - cpu0;
  const cliU = process.cpuUsage(cli0);
  const cliCpu = (cliU.user + cliU.system) / 1000;
  stopSending = true;
  const health = await (await fetch(`http://${base}/api/health`)).json() as any;
  await new Promise((r) => setTimeout(r, 500));
  const rssKb = procKb(proc.pid!, "VmRSS"), hwmKb = procKb(proc.pid!, "VmHWM");
  for (const s of sims) s.ws.close();

  // diff latency: two deep snapshots of one worker, far apart
  const key = encodeURIComponent(`${identityOf({ pid: sims[0].pid }).instance}/${sims[0].pid}/${identityOf().worker_start}`);
  const snaps = await (await fetch(`http://${base}/api/workers/${key}/snapshots?limit=100000`)).json() as any[];
  const deep = snaps.filter((s) => s.deep);
  const [a, b] = [deep[deep.length - 1].id, deep[0].id];
  const dl: number[] = [], ds: number[] = [];
  let rows = 0;
  for (let i = 0; i < 300; i++) {
    const t = performance.now();
    const r = await fetch(`http://${base}/api/diff?a=${a}&b=${b}`);
    rows = ((await r.json()) as any).rows.length;
    if (i < 20) continue;
    dl.push(performance.now() - t);
    ds.push(Number(/dur=([\d.]+)/.exec(r.headers.get("server-timing") ?? "")?.[1]));
  }
  const tl: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t = performance.now();
    await (await fetch(`http://${base}/api/diff?worker=${key}&from=${t0}&to=${t0 + 1e6}`)).json();
    tl.push(performance.now() - t);
  }
  const sp: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    await (await fetch(`http://${base}/api/suspects?window=10m`)).json();
    sp.push(performance.now() - t);
  }
  const dbBytes = ["bench.db", "bench.db-wal"].reduce((n, f) => n + (fs.existsSync(path.join(dir, f)) ? fs.statSync(path.join(dir, f)).size : 0), 0);
  proc.kill("SIGTERM");
  await new Promise((r) => proc.on("exit", r));
  fs.rmSync(dir, { recursive: true, force: true });

  const rate = acks / elapsed;
  const sl = health.store.store_latency_ms;
  const lines = [
    `control-plane ingest: ${WORKERS} workers × ${INFLIGHT} in flight, ${SECONDS} s measured after ${WARMUP_S} s warm-up, 1 in ${DEEP_EVERY} deep (≈${(JSON.stringify(sims[0].plain).length / 1024).toFixed(1)} KB / ${(JSON.stringify(sims[0].deep).length / 1024).toFixed(1)} KB)`,
    `  snapshots/s          ${rate.toFixed(0)}   (target ≥ 2000: ${(rate / 2000).toFixed(2)}×)   errors ${errors}`,
    `  ingest→stored ms     p50 ${f2(sl.p50)}  p99 ${f2(sl.p99)}  max ${f2(sl.max)}  (server side, last ${sl.samples}; target p99 ≤ 50: ${(50 / sl.p99).toFixed(1)}× margin)`,
    `  send→ack ms          p50 ${f2(pct(lat, 0.5))}  p99 ${f2(pct(lat, 0.99))}  (client side, includes queueing of ${INFLIGHT} in flight)`,
    `  diff a/b ms          server p50 ${f2(pct(ds, 0.5))}  p99 ${f2(pct(ds, 0.99))};  HTTP round trip p50 ${f2(pct(dl, 0.5))}  p99 ${f2(pct(dl, 0.99))}  (${dl.length} runs, ${rows} rows; target ≤ 5: ${(5 / pct(dl, 0.5)).toFixed(1)}× margin at round-trip p50)`,
    `  diff worker from/to  p50 ${f2(pct(tl, 0.5))} ms;  suspects (10 min, ${WORKERS} workers) p50 ${f1(pct(sp, 0.5))} ms`,
    `  server CPU           ${f2(srvCpu / Math.max(1, acks))} ms per snapshot (${f1((srvCpu / (elapsed * 1000)) * 100)}% of a core) → ${(acks / (srvCpu / 1000)).toFixed(0)} snapshots/s per core; bench clients ${f2(cliCpu / Math.max(1, acks))} ms per snapshot`,
    `  machine              load average ${os.loadavg().map((x) => x.toFixed(1)).join(" ")} on ${os.cpus().length} CPUs (other processes compete for the same cores)`,
    `  server RSS           ${f1(rssKb / 1024)} MB after run, peak ${f1(hwmKb / 1024)} MB; db ${f1(dbBytes / 1048576)} MB for ${health.store.committed} snapshots (${f2(dbBytes / Math.max(1, health.store.committed) / 1024)} KB each)`,
  ];
  console.log(lines.join("\n"));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
