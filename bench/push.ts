/**
 * Cost of the websocket push on request handling, and the agent's memory while
 * the control plane is away. One nginx worker per configuration, all up at once,
 * rounds alternate (order rotated), wrk on loopback with keepalive against /ok:
 *
 *   nopush     agent collecting every second, no control_plane_url
 *   up         pushing to a test peer (test/harness/ws-peer.ts) that acks
 *   down       pushing to a port nobody listens on (reconnects with backoff)
 *   blackhole  pushing to a TCP server that accepts and never answers (handshake times out)
 *
 * Then "outage memory": a worker collecting every 0.2 s with the control plane down,
 * default queue caps; LuaJIT gc_bytes and RSS sampled from its own snapshots while
 * the queue fills and after it is full (it must stop growing).
 *
 *   bash bench/run.sh push            options: --rounds 3 --seconds 5 --conns 32 --outage-s 60
 */
import * as net from "net";
import { Nginx, sleep } from "../test/harness/nginx";
import { median } from "./stats";
import { wrk as runWrk, WrkRun } from "./wrk";
import { WsPeer } from "../test/harness/ws-peer";
import { freePort } from "../test/harness/ports";

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : def;
}
const ROUNDS = Number(arg("rounds", "3"));
const SECONDS = Number(arg("seconds", "5"));
const CONNS = Number(arg("conns", "32"));
const OUTAGE_S = Number(arg("outage-s", "60"));

type Run = WrkRun;

function wrk(port: number): Promise<Run> {
  return runWrk(`http://127.0.0.1:${port}/ok`, { seconds: SECONDS, conns: CONNS });
}

/** Accepts TCP connections and never sends a byte. */
async function blackhole(): Promise<{ port: number; close: () => Promise<void> }> {
  const socks = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    socks.add(s);
    s.on("close", () => socks.delete(s));
    s.on("error", () => undefined);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of socks) s.destroy();
        srv.close(() => r());
      }),
  };
}

async function main(): Promise<void> {
  const peer = new WsPeer({ token: "t" });
  await peer.start(await freePort());
  const hole = await blackhole();
  const downPort = await freePort();
  const base = { interval_s: 1, token: "t" };
  const configs: Record<string, Nginx> = {
    nopush: new Nginx({ workers: 1, agent: { ...base } }),
    up: new Nginx({ workers: 1, agent: { ...base, control_plane_url: peer.url } }),
    down: new Nginx({ workers: 1, agent: { ...base, control_plane_url: `ws://127.0.0.1:${downPort}/ingest` } }),
    blackhole: new Nginx({ workers: 1, agent: { ...base, control_plane_url: `ws://127.0.0.1:${hole.port}/ingest` } }),
  };
  const names = Object.keys(configs);
  const runs: Record<string, Run[]> = Object.fromEntries(names.map((n) => [n, []]));
  try {
    for (const n of names) await configs[n].start();
    await sleep(3000);
    for (let round = 0; round < ROUNDS; round++) {
      const order = names.map((_, i) => names[(i + round) % names.length]);
      for (const n of order) runs[n].push(await wrk(configs[n].appPort));
    }
    console.log(`requests to /ok, ${CONNS} keepalive connections, ${ROUNDS} rounds × ${SECONDS} s, medians over rounds:`);
    const ref = runs["nopush"];
    for (const n of names) {
      const r = runs[n];
      const rps = median(r.map((x) => x.rps));
      const p50 = median(r.map((x) => x.p50ms));
      const p99 = median(r.map((x) => x.p99ms));
      const max = Math.max(...r.map((x) => x.maxms));
      const errors = r.reduce((a, x) => a + x.errors, 0);
      console.log(
        `  ${n.padEnd(10)} ${rps.toFixed(0).padStart(7)} req/s (×${(rps / median(ref.map((x) => x.rps))).toFixed(3)})  p50 ${p50.toFixed(3)} ms  p99 ${p99.toFixed(3)} ms (×${(p99 / median(ref.map((x) => x.p99ms))).toFixed(2)})  max ${max.toFixed(1)} ms  errors ${errors}`,
      );
    }
    console.log(`  peer received ${peer.unique().length} snapshots from "up"; "down"/"blackhole" pushed nothing (as expected)`);
  } finally {
    for (const n of names) await configs[n].stop();
    await hole.close();
  }

  // outage memory: collect every 0.2 s, control plane down from the start
  const port = await freePort();
  const ng = new Nginx({ workers: 1, agent: { interval_s: 0.2, token: "t", control_plane_url: `ws://127.0.0.1:${port}/ingest` } });
  await ng.start();
  try {
    const pid = ng.workerPids()[0];
    const t0 = Date.now();
    const samples: { t: number; seq: number; gc: number; rss: number }[] = [];
    while (Date.now() - t0 < OUTAGE_S * 1000) {
      await sleep(5000);
      const s = (await ng.snapshots()).find((x) => x.pid === pid);
      samples.push({ t: (Date.now() - t0) / 1000, seq: s.seq, gc: s.luajit.gc_bytes, rss: s.system.rss_bytes });
    }
    console.log(`outage memory: worker collecting every 0.2 s, control plane down, queue cap 120 snapshots / 8 MB:`);
    for (const x of samples) console.log(`  t=${x.t.toFixed(0).padStart(3)} s  seq ${String(x.seq).padStart(4)}  luajit gc ${(x.gc / 1024).toFixed(0).padStart(6)} KB  rss ${(x.rss / 1048576).toFixed(1)} MB`);
    const full = samples.filter((x) => x.seq > 240);
    if (full.length >= 2) {
      const gcs = full.map((x) => x.gc);
      console.log(`  after the queue filled (seq > 240): gc min ${(Math.min(...gcs) / 1024).toFixed(0)} KB, max ${(Math.max(...gcs) / 1024).toFixed(0)} KB; rss ${(full[0].rss / 1048576).toFixed(1)} → ${(full[full.length - 1].rss / 1048576).toFixed(1)} MB`);
    }
    const warn = ng.errorLog().split("\n").filter((l) => /memdiag push/.test(l));
    console.log(`  push log lines during the outage: ${warn.length}`);
  } finally {
    await ng.stop();
    await peer.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
