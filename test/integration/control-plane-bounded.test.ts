/**
 * Issue 4: "control-plane memory bounded by configuration, not by history length".
 *
 * A real control plane (real websockets, real SQLite file) with a retention of a few
 * seconds takes a history many times that long from simulated workers that keep
 * reloading (each life a new worker row, the previous one gone). Afterwards the store
 * holds only what the retention allows and the in-memory structures hold only what is
 * live — measured against the SQLite file, counted by this test over its own connection.
 * (bench/history.ts measures the process RSS over 100k+ snapshots.)
 */
import Database from "better-sqlite3";
import { startCP, RunningCP, getJson } from "../harness/control-plane";
import { SimAgent, simSnapshot } from "../harness/sim-agent";

const WORKERS = 12;
const LIVES = 4;
const PER_LIFE = 40;
const RETENTION_S = 3;

describe("control plane: what it keeps is bounded by its retention, not by the history it has seen", () => {
  let cp: RunningCP;
  let db: Database.Database;
  const count = (sql: string, ...args: unknown[]): number => (db.prepare(sql).get(...args) as { n: number }).n;

  beforeAll(async () => {
    cp = await startCP({ fullResolutionHours: 1 / 3600, retentionDays: RETENTION_S / 86400 });
    db = new Database(cp.db, { readonly: true, fileMustExist: true });
  });

  afterAll(async () => {
    db?.close();
    await cp?.stop();
  });

  test(`${WORKERS * LIVES * PER_LIFE} snapshots from ${WORKERS * LIVES} worker lives: rows, workers and caches end up at what is live`, async () => {
    expect(cp.cp.pruneEveryMs()).toBe(1000); // a tenth of the 1 s full resolution, never below 1 s
    let pid = 5000;
    const live: SimAgent[] = [];
    let maxRows = 0;
    await Promise.all(Array.from({ length: WORKERS }, async (_, slot) => {
      for (let life = 0; life < LIVES; life++) {
        const start = Date.now() / 1000;
        const a = new SimAgent(`${cp.ws}/ingest`, { host: "sim", instance: `sim:${slot % 3}:/sim/`, pid: pid++, worker_id: slot, worker_start: start, generation: life, nginx_version: "1.22.1", agent_version: "0.1.0" });
        await a.connect();
        for (let seq = 1; seq <= PER_LIFE; seq++) {
          await a.send(simSnapshot({ pid: a.identity.pid, instance: a.identity.instance, worker_id: slot, worker_start: start, seq, time: Date.now() / 1000, leaked: seq, deep: seq % 5 === 0 }));
          if (seq % 10 === 0) await new Promise((r) => setTimeout(r, 50)); // a history spread over several retention periods
        }
        if (life < LIVES - 1) await a.close();
        else live.push(a);
        maxRows = Math.max(maxRows, count("SELECT COUNT(*) AS n FROM snapshots"));
      }
    }));
    const total = WORKERS * LIVES * PER_LIFE;
    // the history seen is all of it …
    const health = (await getJson(`${cp.base}/api/health`)).body;
    expect(health.store.committed).toBe(total);
    // … the store forgets by the retention clock: once nothing new arrives, snapshots, then the gone workers' rows go
    for (let i = 0; i < 200; i++) {
      if (count("SELECT COUNT(*) AS n FROM snapshots") === 0 && count("SELECT COUNT(*) AS n FROM workers WHERE state = 'gone'") === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(count("SELECT COUNT(*) AS n FROM snapshots")).toBe(0);
    expect(count("SELECT COUNT(*) AS n FROM workers WHERE state = 'gone'")).toBe(0);
    expect(count("SELECT COUNT(*) AS n FROM workers")).toBe(WORKERS); // the live ones
    // in memory: one entry per live worker, the metric-name cache equals its table, commands capped
    const c = cp.cp;
    expect(c.live.latest.size).toBe(WORKERS);
    expect(c.ingest.agents.size).toBe(WORKERS);
    expect([...c.live.latest.keys()].sort()).toEqual(live.map((a) => a.key).sort());
    expect(c.store.metricNames().length).toBe(count("SELECT COUNT(*) AS n FROM metric_names"));
    expect(c.ingest.commands.size).toBeLessThanOrEqual(1000);
    expect(c.writer.status().backlog).toBe(0);
    // the API answers from what is kept: workers and instances list the live ones only
    expect((await getJson(`${cp.base}/api/workers`)).body).toHaveLength(WORKERS);
    const inst = (await getJson(`${cp.base}/api/instances`)).body as any[];
    expect(inst.reduce((n, i) => n + i.workers.length, 0)).toBe(WORKERS);
    console.log(`history ${total} snapshots from ${WORKERS * LIVES} worker lives; at most ${maxRows} rows stored at once; after the retention: 0 snapshot rows, ${WORKERS} worker rows`);
    for (const a of live) await a.close();
  }, 120000);
});
