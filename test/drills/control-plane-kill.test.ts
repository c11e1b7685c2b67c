/**
 * Drill: the control plane is SIGKILLed mid-stream and restarted on the same port and
 * database, several times, while nginx (2 workers, agents pushing every 0.5 s) serves
 * steady keepalive traffic.
 *   - no acknowledged snapshot is lost: every ack the control plane sent (recorded by a
 *     TCP proxy between agents and control plane, i.e. independently of both) has its
 *     row in the SQLite file afterwards;
 *   - agents reconnect (a new welcome per worker after every restart) and their queues
 *     drain (every seq a worker published up to the last restart is stored, no gaps);
 *   - nginx serves every request while the control plane is down.
 * Kills: 2 (CI), MEMDIAG_DRILL_FULL=1: 10.
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { Nginx, sleep } from "../harness/nginx";
import { freePort } from "../harness/ports";
import { AckProxy, CPProcess, Load, SEED, ensureDist, pick, rng, storedSeqs, tally, tempDir, unexpectedErrors, waitFor } from "./lib";

const KILLS = pick(2, 10);

const stored = (db: string) => storedSeqs(db, "key");

jest.setTimeout(60000 + KILLS * 40000);

test(`control plane SIGKILLed ${KILLS}× mid-stream: nothing acked is lost, agents reconnect, queues drain, nginx serves`, async () => {
  ensureDist();
  const rand = rng(SEED);
  console.log(`seed ${SEED}`);
  const dir = tempDir();
  const db = path.join(dir, "memdiag.db");
  const token = crypto.randomBytes(12).toString("hex");
  const cp = new CPProcess(await freePort(), db, token);
  const proxy = new AckProxy(() => cp.port);
  let survived = 0;
  let ngx: Nginx | undefined;
  let load: Load | undefined;
  const notes: string[] = [];
  try {
    await cp.start();
    await proxy.start();
    ngx = new Nginx({ workers: 2, agent: { interval_s: 0.5, control_plane_url: `ws://127.0.0.1:${proxy.port}/ingest`, token } });
    await ngx.start();
    const pids = ngx.workerPids();
    const keyOf = (pid: number) => [...proxy.welcomes.keys()].find((k) => k.split("/")[k.split("/").length - 2] === String(pid));
    await waitFor("both workers acked", () => pids.every((p) => (proxy.acked.get(keyOf(p) ?? "")?.size ?? 0) >= 2), 30000);
    load = new Load(ngx.appPort, ["/ok"], 4).start();

    for (let k = 0; k < KILLS; k++) {
      await sleep(500 + rand() * 2500); // somewhere mid-stream
      const welcomesBefore = new Map(pids.map((p) => [p, proxy.welcomes.get(keyOf(p)!) ?? 0]));
      const errorsBefore = load.result.errors;
      const reqBefore = load.result.requests;
      await cp.kill("SIGKILL");
      const down = 2000 + rand() * 3000;
      await sleep(down);
      const servedDown = load.result.requests - reqBefore;
      const errorsDown = load.result.errors - errorsBefore;
      // what every worker published up to now must arrive once the control plane is back
      const published = new Map((await ngx.snapshots()).map((s) => [s.pid, s.seq as number]));
      await cp.start();
      await waitFor("every worker reconnected", () => pids.every((p) => (proxy.welcomes.get(keyOf(p)!) ?? 0) > welcomesBefore.get(p)!), 40000);
      await waitFor("queues drained", () => {
        const st = stored(db);
        return pids.every((p) => {
          const s = st.get(keyOf(p)!) ?? new Set();
          for (let q = 1; q <= published.get(p)!; q++) if (!s.has(q)) return false;
          return true;
        });
      }, 40000, 250);
      const st = stored(db);
      let lost = 0;
      for (const [key, seqs] of proxy.acked) for (const q of seqs) if (!st.get(key)?.has(q)) lost++;
      const ok = lost === 0 && errorsDown === 0 && servedDown > 0;
      if (ok) survived++;
      notes.push(`kill ${k + 1}: down ${(down / 1000).toFixed(1)} s, ${servedDown} requests served while down, ${errorsDown} errors, ${lost} acked snapshots lost`);
      console.log(notes[notes.length - 1]);
    }
    const res = await load.stop();
    load = undefined;
    const st = stored(db);
    const ackedTotal = [...proxy.acked.values()].reduce((a, s) => a + s.size, 0);
    const lostKeys: string[] = [];
    for (const [key, seqs] of proxy.acked) for (const q of seqs) if (!st.get(key)?.has(q)) lostKeys.push(`${key}#${q}`);
    console.log(`acked ${ackedTotal}, stored ${[...st.values()].reduce((a, s) => a + s.size, 0)}, lost ${lostKeys.length}; requests ${res.requests}, errors ${res.errors}`);
    expect(lostKeys).toEqual([]);
    expect(res.errors).toBe(0);
    expect(res.requests).toBeGreaterThan(0);
    // agents: only connection warnings, no errors, no crashes
    const { unexpected, reconnects } = unexpectedErrors(ngx.errors());
    console.log(`nginx error log: ${reconnects} cosocket lines from the lost connections (expected), ${unexpected.length} others`);
    expect(unexpected).toEqual([]);
    expect(survived).toBe(KILLS);
  } finally {
    tally("control plane SIGKILL + restart", KILLS, survived, notes.length ? notes[notes.length - 1] : "");
    if (load) await load.stop();
    await ngx?.stop();
    await proxy.stop();
    await cp.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
