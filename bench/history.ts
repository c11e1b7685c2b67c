/**
 * Control-plane memory vs history length ("control-plane memory bounded by
 * configuration, not by history length").
 *
 * Starts `memdiag serve` as its own process with a small retention (default: full
 * resolution 20 s, everything deleted after 40 s), then streams a long history from
 * many simulated workers over websockets (default 100,000 snapshots from 64 workers,
 * 1 in 10 a deep scan with unrooted groups and size classes); every worker "reloads"
 * (reconnects as a new pid and worker_start: a new worker row, the old one gone) every
 * --churn snapshots. Every --every snapshots it samples, while the consoles' queries
 * run (/api/suspects, /api/instances, /metrics, /api/workers):
 *   RSS, VmHWM      of the control-plane process (/proc/<pid>/status)
 *   rows            snapshots / workers / metric_names rows, counted by this process in the SQLite file
 *   db              database + WAL file size
 * and prints RSS vs snapshots ingested. Bounded means: RSS stops growing once the
 * retention is full, whatever the number of snapshots ingested.
 *
 *   bash bench/run.sh history        options (environment): HISTORY_SNAPSHOTS=100000 HISTORY_WORKERS=64
 *                                    HISTORY_CHURN=400 HISTORY_EVERY=10000 HISTORY_RETENTION_S=40 HISTORY_FULL_S=20
 */
import { ChildProcess } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import WebSocket from "ws";
import Database from "better-sqlite3";
import { buildSnapshot, identityOf, defaultSizeClasses } from "../test/fixtures/snapshots";
import { serveForBench } from "./serve";

const env = (k: string, d: number): number => (process.env[k] !== undefined ? Number(process.env[k]) : d);
const TOTAL = env("HISTORY_SNAPSHOTS", 100000);
const WORKERS = env("HISTORY_WORKERS", 64);
const CHURN = env("HISTORY_CHURN", 400);
const EVERY = env("HISTORY_EVERY", 10000);
const RETENTION_S = env("HISTORY_RETENTION_S", 40);
const FULL_S = env("HISTORY_FULL_S", 20);
const INFLIGHT = 2;

function procKb(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

async function startServer(dir: string): Promise<{ proc: ChildProcess; base: string; db: string }> {
  const db = path.join(dir, "history.db");
  const s = await serveForBench(db, path.join(dir, "none.json"),
    ["--retention-days", (RETENTION_S / 86400).toFixed(9), "--full-resolution-hours", (FULL_S / 3600).toFixed(9)]);
  return { ...s, db };
}

interface Sim {
  slot: number;
  ws?: WebSocket;
  pid: number;
  start: number;
  seq: number;
  sentInLife: number;
  parts: { plain: string[]; deep: string[] };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-history-"));
  const { proc, base, db } = await startServer(dir);
  const t0 = Date.now() / 1000;
  let acked = 0, errors = 0, nextPid = 30000;
  let done: () => void = () => undefined;
  const finished = new Promise<void>((r) => (done = r));
  let sampling: Promise<void> | undefined;
  const rows: string[] = [];

  const template = (snap: Record<string, any>): string[] => {
    snap.seq = 999999991;
    snap.time = 999999992.5;
    return JSON.stringify({ type: "snapshot", seq: 999999991, snapshot: snap }).split(/999999991|999999992\.5/);
  };
  const unrooted = Array.from({ length: 8 }, (_, i) => ({ signature: `${16384 >> (i % 3)}|ngx_mod${i}_cleanup|.bss+0x${(i * 64).toString(16)}`, owner: `ngx_http_mod${i}_module.so (.bss+0x${(i * 64).toString(16)})`, pools: 2 + i, block_bytes: (2 + i) * 16384, large_blocks: i, large_bytes: i * 300000, cleanups: [`ngx_mod${i}_cleanup`] }));
  const instanceOf = (slot: number): string => `bench-gw${slot % 8}/1//etc/nginx/`;
  const life = (s: Sim): void => {
    s.pid = nextPid++;
    s.start = Date.now() / 1000;
    s.seq = 0;
    s.sentInLife = 0;
    const o = { pid: s.pid, worker_id: s.slot % 4, worker_start: s.start, instance: instanceOf(s.slot), time: t0 };
    s.parts = { plain: template(buildSnapshot(o)), deep: template(buildSnapshot({ ...o, deep: true, unrooted, size_classes: defaultSizeClasses() })) };
  };
  let sent = 0;
  const sendNext = (s: Sim): void => {
    if (sent >= TOTAL) return;
    if (s.sentInLife >= CHURN) return void reconnect(s);
    sent++;
    s.seq++;
    s.sentInLife++;
    const p = s.seq % 10 === 0 ? s.parts.deep : s.parts.plain;
    const seq = String(s.seq);
    s.ws!.send(p[0] + seq + p[1] + seq + p[2] + String(Date.now() / 1000) + p[3]);
  };
  const connect = (s: Sim): Promise<void> => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${base}/ingest`, { perMessageDeflate: false });
    s.ws = ws;
    let inflight = 0;
    ws.on("error", reject);
    ws.on("open", () => ws.send(JSON.stringify({ type: "hello", protocol: 1, token: "", agent: identityOf({ pid: s.pid, worker_id: s.slot % 4, worker_start: s.start, instance: instanceOf(s.slot), generation: 1 }) })));
    ws.on("message", (d) => {
      const m = JSON.parse(d.toString());
      if (m.type === "welcome") {
        resolve();
        for (let i = 0; i < INFLIGHT; i++) { inflight++; sendNext(s); }
        return;
      }
      if (m.type !== "ack" && m.type !== "error") return;
      if (m.type === "error") errors++;
      acked++;
      inflight--;
      if (acked % EVERY === 0) sampling = sample();
      if (acked >= TOTAL) return done();
      if (s.sentInLife >= CHURN) {
        if (inflight === 0) reconnect(s);
        return;
      }
      inflight++;
      sendNext(s);
    });
  });
  const reconnect = (s: Sim): void => {
    const old = s.ws!;
    old.removeAllListeners("message");
    old.close();
    life(s);
    connect(s).catch((e) => console.error(`reconnect: ${e.message}`));
  };

  const reader = (): Database.Database => new Database(db, { readonly: true, fileMustExist: true });
  const sample = async (): Promise<void> => {
    const n = acked;
    // what consoles and scrapers ask for, so their caches (if any) are exercised too
    const q = async (p: string): Promise<number> => { const t = performance.now(); await (await fetch(`http://${base}${p}`)).text(); return performance.now() - t; };
    const sus = await q("/api/suspects?window=10m");
    await q("/api/instances");
    await q("/metrics");
    await q("/api/workers");
    const r = reader();
    const c = (sql: string): number => (r.prepare(sql).get() as { n: number }).n;
    const snaps = c("SELECT COUNT(*) AS n FROM snapshots"), workers = c("SELECT COUNT(*) AS n FROM workers"), names = c("SELECT COUNT(*) AS n FROM metric_names");
    r.close();
    const dbMb = ["", "-wal"].reduce((x, f) => x + (fs.existsSync(db + f) ? fs.statSync(db + f).size : 0), 0) / 1048576;
    rows.push(`${String(n).padStart(9)}  ${((Date.now() / 1000 - t0)).toFixed(0).padStart(5)}  ${(procKb(proc.pid!, "VmRSS") / 1024).toFixed(1).padStart(7)}  ${(procKb(proc.pid!, "VmHWM") / 1024).toFixed(1).padStart(7)}  ${String(snaps).padStart(8)}  ${String(workers).padStart(7)}  ${String(names).padStart(6)}  ${dbMb.toFixed(1).padStart(7)}  ${sus.toFixed(0).padStart(6)}`);
    console.log(rows[rows.length - 1]);
  };

  console.log(`control-plane memory vs history: ${TOTAL} snapshots from ${WORKERS} simulated workers (each reloads every ${CHURN} snapshots), retention ${RETENTION_S} s (full resolution ${FULL_S} s); load average ${os.loadavg().map((x) => x.toFixed(1)).join(" ")}`);
  console.log(" ingested  t (s)  RSS MB  HWM MB  snap rows  workers  names    db MB  suspects ms");
  const sims: Sim[] = [];
  for (let slot = 0; slot < WORKERS; slot++) {
    const s = { slot } as Sim;
    life(s);
    sims.push(s);
  }
  await Promise.all(sims.map((s) => connect(s)));
  await finished;
  await sampling;
  // a quiet spell after the run: the retention job catches up, nothing new comes in
  await new Promise((r) => setTimeout(r, (RETENTION_S / 4) * 1000));
  await sample();
  for (const s of sims) s.ws?.close();
  proc.kill("SIGTERM");
  await new Promise((r) => proc.on("exit", r));
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(`errors ${errors}; load average ${os.loadavg().map((x) => x.toFixed(1)).join(" ")} on ${os.cpus().length} CPUs`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
