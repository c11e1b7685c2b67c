/**
 * SQLite storage (better-sqlite3, WAL). One row per snapshot: a few summary
 * columns, the flattened metrics packed as (u32 metric-name id, f64 value) pairs
 * (ids in the metric_names table), the unrooted-group owners (JSON), and the
 * full frame as the agent sent it, gzip'ed.
 * Writes come in batches from writer.ts (one transaction per batch).
 */
import Database from "better-sqlite3";
import * as zlib from "zlib";
import { AgentIdentity, WorkerInfo } from "./protocol";
import { UnrootedInfo } from "./summary";

export interface WorkerRow extends WorkerInfo {
  id: number;
  worker_id: number | null;
  nginx_version: string;
  agent_version: string;
  /** key of the worker this one replaced (same instance and worker slot) */
  previous_key: string | null;
}

export interface NewSnapshot {
  id: number;
  worker: number;
  seq: number;
  time: number;
  received: number;
  deep: boolean;
  rss_bytes: number;
  metrics: Record<string, number>;
  unrooted: Record<string, UnrootedInfo>;
  /** gzip of the agent's frame ({type:"snapshot", seq, snapshot}) */
  full: Buffer;
}

export interface SnapshotMeta {
  id: number;
  worker: number;
  seq: number;
  time: number;
  deep: boolean;
  rss_bytes: number;
}

export interface SnapshotMetrics extends SnapshotMeta {
  metrics: Record<string, number>;
  unrooted: Record<string, UnrootedInfo>;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers(
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  instance TEXT NOT NULL,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  worker_id INTEGER,
  generation INTEGER NOT NULL,
  worker_start REAL NOT NULL,
  nginx_version TEXT NOT NULL,
  agent_version TEXT NOT NULL,
  first_seen REAL NOT NULL,
  last_seen REAL NOT NULL,
  state TEXT NOT NULL,
  snapshots INTEGER NOT NULL DEFAULT 0,
  last_snapshot_id INTEGER,
  rss_bytes INTEGER,
  previous_key TEXT
);
CREATE INDEX IF NOT EXISTS workers_instance ON workers(instance);
CREATE TABLE IF NOT EXISTS metric_names(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS snapshots(
  id INTEGER PRIMARY KEY,
  worker INTEGER NOT NULL REFERENCES workers(id),
  seq INTEGER NOT NULL,
  time REAL NOT NULL,
  received REAL NOT NULL,
  deep INTEGER NOT NULL,
  rss_bytes INTEGER NOT NULL,
  metrics BLOB NOT NULL,
  unrooted TEXT,
  full BLOB NOT NULL,
  downsampled INTEGER NOT NULL DEFAULT 0,
  UNIQUE(worker, seq)
);
CREATE INDEX IF NOT EXISTS snapshots_worker_time ON snapshots(worker, time);
CREATE INDEX IF NOT EXISTS snapshots_received ON snapshots(received);
`;

const WORKER_COLS = `id, key, instance, host, pid, worker_id, generation, worker_start, nginx_version, agent_version,
  first_seen, last_seen, state, snapshots, last_snapshot_id, rss_bytes, previous_key`;

function workerRow(r: Record<string, unknown>): WorkerRow {
  const w = { ...r } as unknown as WorkerRow;
  if (w.last_snapshot_id === null) delete (w as Partial<WorkerRow>).last_snapshot_id;
  if (w.rss_bytes === null) delete (w as Partial<WorkerRow>).rss_bytes;
  return w;
}

export function workerKey(a: Pick<AgentIdentity, "instance" | "pid" | "worker_start">): string {
  return `${a.instance}/${a.pid}/${a.worker_start}`;
}

export class Store {
  readonly db: Database.Database;
  private names = new Map<string, number>();
  private idToName: string[] = [];
  private nextSnapshotId: number;
  private st: Record<string, Database.Statement>;

  constructor(readonly file: string, opts: { synchronous?: "FULL" | "NORMAL" } = {}) {
    this.db = new Database(file);
    this.db.pragma("journal_mode = WAL");
    // NORMAL in WAL mode: a commit survives a crash or kill of this process (the OS has it);
    // FULL also survives power loss at the price of an fsync per commit
    this.db.pragma(`synchronous = ${opts.synchronous ?? "NORMAL"}`);
    this.db.pragma("busy_timeout = 2000");
    this.db.exec(SCHEMA);
    this.db.prepare("INSERT OR IGNORE INTO meta(k, v) VALUES ('schema_version', '1')").run();
    for (const r of this.db.prepare("SELECT id, name FROM metric_names").all() as { id: number; name: string }[]) {
      this.names.set(r.name, r.id);
      this.idToName[r.id] = r.name;
    }
    const max = this.db.prepare("SELECT MAX(id) AS m FROM snapshots").get() as { m: number | null };
    this.nextSnapshotId = (max.m ?? 0) + 1;
    const db = this.db;
    this.st = {
      workerByKey: db.prepare(`SELECT ${WORKER_COLS} FROM workers WHERE key = ?`),
      workerById: db.prepare(`SELECT ${WORKER_COLS} FROM workers WHERE id = ?`),
      prevWorker: db.prepare(`SELECT key FROM workers WHERE instance = ? AND key <> ? AND (worker_id IS ? ) ORDER BY first_seen DESC LIMIT 1`),
      insertWorker: db.prepare(`INSERT INTO workers(key, instance, host, pid, worker_id, generation, worker_start, nginx_version,
        agent_version, first_seen, last_seen, state, previous_key) VALUES (@key, @instance, @host, @pid, @worker_id, @generation,
        @worker_start, @nginx_version, @agent_version, @now, @now, 'live', @previous_key)`),
      reviveWorker: db.prepare(`UPDATE workers SET state = 'live', last_seen = ?, generation = ? WHERE id = ?`),
      goneWorker: db.prepare(`UPDATE workers SET state = 'gone', last_seen = MAX(last_seen, ?) WHERE id = ?`),
      insertName: db.prepare("INSERT INTO metric_names(name) VALUES (?)"),
      insertSnapshot: db.prepare(`INSERT OR IGNORE INTO snapshots(id, worker, seq, time, received, deep, rss_bytes, metrics, unrooted, full)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      bumpWorker: db.prepare(`UPDATE workers SET snapshots = snapshots + ?, last_snapshot_id = MAX(IFNULL(last_snapshot_id, 0), ?),
        rss_bytes = ?, last_seen = MAX(last_seen, ?) WHERE id = ?`),
      snapshot: db.prepare("SELECT id, worker, seq, time, deep, rss_bytes, full FROM snapshots WHERE id = ?"),
      snapshotMetrics: db.prepare("SELECT id, worker, seq, time, deep, rss_bytes, metrics, unrooted FROM snapshots WHERE id = ?"),
      atOrBefore: db.prepare(`SELECT id, worker, seq, time, deep, rss_bytes, metrics, unrooted FROM snapshots
        WHERE worker = ? AND time <= ? ORDER BY time DESC LIMIT 1`),
      deepAtOrBefore: db.prepare(`SELECT id, worker, seq, time, deep, rss_bytes, metrics, unrooted FROM snapshots
        WHERE worker = ? AND time <= ? AND deep = 1 ORDER BY time DESC LIMIT 1`),
      firstAfter: db.prepare(`SELECT id, worker, seq, time, deep, rss_bytes, metrics, unrooted FROM snapshots
        WHERE worker = ? AND time >= ? ORDER BY time ASC LIMIT 1`),
      window: db.prepare(`SELECT id, worker, seq, time, deep, rss_bytes, metrics, unrooted FROM snapshots
        WHERE worker = ? AND time >= ? AND time <= ? ORDER BY time ASC`),
      series: db.prepare(`SELECT time, metrics FROM snapshots
        WHERE worker = ? AND time >= ? AND time <= ? ORDER BY time ASC LIMIT ?`),
      windowIds: db.prepare(`SELECT id, deep FROM snapshots WHERE worker = ? AND time >= ? AND time <= ? ORDER BY time ASC`),
      list: db.prepare(`SELECT id, worker, seq, time, deep, rss_bytes FROM snapshots
        WHERE worker = ? AND time >= ? AND time <= ? ORDER BY time DESC LIMIT ?`),
      workersSeenSince: db.prepare(`SELECT ${WORKER_COLS} FROM workers WHERE last_seen >= ? ORDER BY id`),
      span: db.prepare("SELECT MIN(time) AS first, MAX(time) AS last FROM snapshots WHERE worker = ?"),
    };
    // nothing is connected to a process that just started: every worker is gone until it says hello again
    db.prepare("UPDATE workers SET state = 'gone' WHERE state = 'live'").run();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  /** next snapshot id: assigned at receive time so live consoles get it before (or without) a commit */
  allocateId(): number {
    return this.nextSnapshotId++;
  }

  /** register a worker that said hello: a known key comes back to life, a new one starts a series */
  helloWorker(a: AgentIdentity, now: number): WorkerRow {
    const key = workerKey(a);
    const row = this.st.workerByKey.get(key) as Record<string, unknown> | undefined;
    if (row) {
      this.st.reviveWorker.run(now, a.generation, row.id);
      return workerRow(this.st.workerById.get(row.id) as Record<string, unknown>);
    }
    const prev = this.st.prevWorker.get(a.instance, key, a.worker_id ?? null) as { key: string } | undefined;
    const info = this.st.insertWorker.run({
      key, instance: a.instance, host: a.host, pid: a.pid, worker_id: a.worker_id ?? null, generation: a.generation,
      worker_start: a.worker_start, nginx_version: a.nginx_version, agent_version: a.agent_version, now,
      previous_key: prev?.key ?? null,
    });
    return workerRow(this.st.workerById.get(info.lastInsertRowid) as Record<string, unknown>);
  }

  markGone(id: number, now: number): void {
    this.st.goneWorker.run(now, id);
  }

  worker(key: string): WorkerRow | undefined {
    const r = this.st.workerByKey.get(key) as Record<string, unknown> | undefined;
    return r ? workerRow(r) : undefined;
  }

  workerById(id: number): WorkerRow | undefined {
    const r = this.st.workerById.get(id) as Record<string, unknown> | undefined;
    return r ? workerRow(r) : undefined;
  }

  workers(filter: { instance?: string; state?: string } = {}): WorkerRow[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.instance !== undefined) { where.push("instance = ?"); args.push(filter.instance); }
    if (filter.state !== undefined) { where.push("state = ?"); args.push(filter.state); }
    const sql = `SELECT ${WORKER_COLS} FROM workers ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY instance, first_seen, id`;
    return (this.db.prepare(sql).all(...args) as Record<string, unknown>[]).map(workerRow);
  }

  workersSeenSince(t: number): WorkerRow[] {
    return (this.st.workersSeenSince.all(t) as Record<string, unknown>[]).map(workerRow);
  }

  /**
   * Store a batch in one transaction. Returns the ids that were new (a resent
   * snapshot with a known worker+seq is ignored and not returned). Throws when
   * the database cannot be written; then nothing of the batch is stored.
   */
  insertBatch(items: readonly NewSnapshot[]): Set<number> {
    const fresh = new Set<number>();
    const newNames: string[] = [];
    const tx = this.db.transaction(() => {
      const perWorker = new Map<number, { n: number; last: number; rss: number; time: number }>();
      for (const s of items) {
        const keys = Object.keys(s.metrics);
        const enc = Buffer.allocUnsafe(keys.length * 12);
        let off = 0;
        for (const k of keys) {
          let id = this.names.get(k);
          if (id === undefined) {
            id = Number(this.st.insertName.run(k).lastInsertRowid);
            this.names.set(k, id);
            newNames.push(k);
          }
          enc.writeUInt32LE(id, off);
          enc.writeDoubleLE(s.metrics[k], off + 4);
          off += 12;
        }
        const unrooted = Object.keys(s.unrooted).length ? JSON.stringify(s.unrooted) : null;
        const r = this.st.insertSnapshot.run(s.id, s.worker, s.seq, s.time, s.received, s.deep ? 1 : 0, s.rss_bytes,
          enc, unrooted, s.full);
        if (r.changes === 0) continue;
        fresh.add(s.id);
        const w = perWorker.get(s.worker) ?? { n: 0, last: 0, rss: 0, time: 0 };
        w.n++;
        if (s.id > w.last) { w.last = s.id; w.rss = s.rss_bytes; }
        w.time = Math.max(w.time, s.received / 1000);
        perWorker.set(s.worker, w);
      }
      for (const [id, w] of perWorker) this.st.bumpWorker.run(w.n, w.last, w.rss, w.time, id);
    });
    try {
      tx();
    } catch (e) {
      for (const k of newNames) this.names.delete(k); // rolled back with the transaction
      throw e;
    }
    for (const k of newNames) this.idToName[this.names.get(k)!] = k;
    return fresh;
  }

  private decode(r: Record<string, unknown>): SnapshotMetrics {
    const enc = r.metrics as Buffer;
    const metrics: Record<string, number> = {};
    for (let off = 0; off + 12 <= enc.length; off += 12) {
      const name = this.idToName[enc.readUInt32LE(off)];
      if (name !== undefined) metrics[name] = enc.readDoubleLE(off + 4);
    }
    return {
      id: r.id as number, worker: r.worker as number, seq: r.seq as number, time: r.time as number,
      deep: r.deep === 1, rss_bytes: r.rss_bytes as number, metrics,
      unrooted: r.unrooted ? JSON.parse(r.unrooted as string) : {},
    };
  }

  /** the full snapshot as the agent sent it */
  snapshot(id: number): (SnapshotMeta & { snapshot: Record<string, unknown> }) | undefined {
    const r = this.st.snapshot.get(id) as Record<string, unknown> | undefined;
    if (!r) return undefined;
    const snapshot = JSON.parse(zlib.gunzipSync(r.full as Buffer).toString("utf8")).snapshot;
    return { id: r.id as number, worker: r.worker as number, seq: r.seq as number, time: r.time as number, deep: r.deep === 1, rss_bytes: r.rss_bytes as number, snapshot };
  }

  snapshotMetrics(id: number): SnapshotMetrics | undefined {
    const r = this.st.snapshotMetrics.get(id) as Record<string, unknown> | undefined;
    return r ? this.decode(r) : undefined;
  }

  /** latest snapshot of the worker at or before t */
  atOrBefore(worker: number, t: number, deepOnly = false): SnapshotMetrics | undefined {
    const r = (deepOnly ? this.st.deepAtOrBefore : this.st.atOrBefore).get(worker, t) as Record<string, unknown> | undefined;
    return r ? this.decode(r) : undefined;
  }

  firstAfter(worker: number, t: number): SnapshotMetrics | undefined {
    const r = this.st.firstAfter.get(worker, t) as Record<string, unknown> | undefined;
    return r ? this.decode(r) : undefined;
  }

  window(worker: number, from: number, to: number): SnapshotMetrics[] {
    return (this.st.window.all(worker, from, to) as Record<string, unknown>[]).map((r) => this.decode(r));
  }

  /**
   * The worker's snapshots in [from, to], at most `max` plain and `max` deep ones
   * (evenly spaced, first and last kept): bounded work for trends however often agents push.
   */
  windowSampled(worker: number, from: number, to: number, max: number): SnapshotMetrics[] {
    const rows = this.st.windowIds.all(worker, from, to) as { id: number; deep: number }[];
    if (rows.length <= max) return this.window(worker, from, to);
    const pick = (xs: { id: number }[]): number[] => {
      if (xs.length <= max) return xs.map((x) => x.id);
      const out: number[] = [];
      for (let i = 0; i < max; i++) out.push(xs[Math.round((i * (xs.length - 1)) / (max - 1))].id);
      return out;
    };
    const ids = new Set([...pick(rows.filter((r) => r.deep !== 1)), ...pick(rows.filter((r) => r.deep === 1))]);
    const out: SnapshotMetrics[] = [];
    for (const r of rows) {
      if (!ids.has(r.id)) continue;
      const m = this.snapshotMetrics(r.id);
      if (m) out.push(m);
    }
    return out;
  }

  series(worker: number, metric: string, from: number, to: number, limit = 100000): [number, number][] {
    const id = this.names.get(metric);
    if (id === undefined) return [];
    const rows = this.st.series.all(worker, from, to, limit) as { time: number; metrics: Buffer }[];
    const out: [number, number][] = [];
    for (const r of rows) {
      const b = r.metrics;
      for (let off = 0; off + 12 <= b.length; off += 12) {
        if (b.readUInt32LE(off) === id) {
          out.push([r.time, b.readDoubleLE(off + 4)]);
          break;
        }
      }
    }
    return out;
  }

  /** times (agent clock) of the worker's first and last stored snapshot; undefined without snapshots */
  span(worker: number): { first: number; last: number } | undefined {
    const r = this.st.span.get(worker) as { first: number | null; last: number | null };
    return r.first === null || r.last === null ? undefined : { first: r.first, last: r.last };
  }

  listSnapshots(worker: number, from: number, to: number, limit: number): SnapshotMeta[] {
    return (this.st.list.all(worker, from, to, limit) as Record<string, unknown>[]).map((r) => ({
      id: r.id as number, worker: r.worker as number, seq: r.seq as number, time: r.time as number, deep: r.deep === 1, rss_bytes: r.rss_bytes as number,
    }));
  }

  metricNames(): string[] {
    return [...this.names.keys()].sort();
  }

  hasMetric(name: string): boolean {
    return this.names.has(name);
  }

  /**
   * Retention, by the time the control plane received each snapshot (agent clocks
   * may be off): older than full resolution → thinned to the last snapshot per
   * worker and minute (of snapshot time); older than retention → deleted; workers
   * without snapshots last seen before retention → forgotten.
   */
  prune(now: number, fullResolutionHours: number, retentionDays: number): { thinned: number; deleted: number } {
    const fullCut = (now - fullResolutionHours * 3600) * 1000;
    const retCut = (now - retentionDays * 86400) * 1000;
    let thinned = 0, deleted = 0;
    this.db.transaction(() => {
      deleted = this.db.prepare("DELETE FROM snapshots WHERE received < ?").run(retCut).changes;
      thinned = this.db.prepare(`DELETE FROM snapshots WHERE received < ? AND downsampled = 0 AND id NOT IN (
          SELECT MAX(id) FROM snapshots WHERE received < ? GROUP BY worker, CAST(time / 60 AS INTEGER))`).run(fullCut, fullCut).changes;
      this.db.prepare("UPDATE snapshots SET downsampled = 1 WHERE received < ? AND downsampled = 0").run(fullCut);
      if (thinned + deleted > 0) {
        this.db.prepare(`UPDATE workers SET snapshots = (SELECT COUNT(*) FROM snapshots WHERE worker = workers.id)`).run();
      }
      this.db.prepare(`DELETE FROM workers WHERE state = 'gone' AND last_seen < ? AND NOT EXISTS (SELECT 1 FROM snapshots WHERE worker = workers.id)`).run(retCut / 1000);
    })();
    return { thinned, deleted };
  }
}
