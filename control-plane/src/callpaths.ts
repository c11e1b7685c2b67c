/**
 * Allocation call paths of a worker on the control plane: fetched
 * live from the agent with the `sampler_top` command, frames named with
 * elfsym.ts where the objects are readable on this host, stored per fetch
 * (table `callpaths`, gzip'ed JSON, the last KEEP per worker) so two fetches
 * can be diffed, and exported as FlameGraph folded stacks.
 */
import * as zlib from "zlib";
import type Database from "better-sqlite3";
import { Symbolizer } from "./elfsym";
import type { Callpath, CallpathDiff, CallpathDiffRow, CallpathFrame, Callpaths } from "./protocol";

/** fetches kept per worker */
export const KEEP = 100;

type Obj = Record<string, unknown>;

const clean = (s: string) => s.replace(/[; ]/g, "_");

/** Stable identity of a path: the allocation function and module+offset of every frame (symbol-independent). */
export function pathKey(fn: string, frames: CallpathFrame[]): string {
  return `${fn}|${frames.map((f) => (f.module && f.offset ? `${f.module}+${f.offset}` : (f.pc ?? "?"))).join("<")}`;
}

/** The agent's `sampler_top` result → Callpaths paths, frames named with `sym`. */
export function symbolizePaths(result: Obj, sym: Symbolizer): Callpath[] {
  const out: Callpath[] = [];
  const paths = Array.isArray(result.paths) ? (result.paths as Obj[]) : [];
  for (const p of paths) {
    const raw = Array.isArray(p.frames) ? (p.frames as Obj[]) : [];
    const frames: CallpathFrame[] = raw.map((f) => {
      const fr: CallpathFrame = {
        pc: (f.pc as string) ?? null,
        module: (f.module as string) ?? null,
        offset: (f.offset as string) ?? null,
        build_id: (f.build_id as string) ?? null,
        path: (f.path as string) ?? null,
        name: (f.name as string) ?? null,
        label: "",
      };
      let r;
      try {
        r = sym.resolve(fr);
      } catch {
        r = undefined;
      }
      if (r) {
        fr.label = r.name;
        fr.source = r.source;
      } else fr.label = (f.label as string) ?? (fr.module && fr.offset ? `${fr.module}+${fr.offset}` : (fr.pc ?? "?"));
      return fr;
    });
    const fn = String(p.fn ?? "?");
    out.push({
      key: pathKey(fn, frames),
      fn,
      est_bytes: Number(p.est_bytes) || 0,
      est_count: Number(p.est_count) || 0,
      records: Number(p.records) || 0,
      record_bytes: Number(p.record_bytes) || 0,
      frames,
      folded: [...frames.map((f) => clean(f.label))].reverse().concat(fn).join(";"),
    });
  }
  return out;
}

/** FlameGraph input: "outer;...;inner;fn <est_bytes>" per path. */
export function foldedOf(paths: Callpath[]): string {
  const lines = paths.filter((p) => p.est_bytes > 0).map((p) => `${p.folded} ${Math.round(p.est_bytes)}`);
  return lines.length ? lines.join("\n") + "\n" : "";
}

/** Growth per path from fetch a to fetch b, largest growth first. */
export function diffCallpaths(a: Callpaths, b: Callpaths): CallpathDiff {
  const rows = new Map<string, CallpathDiffRow>();
  const row = (p: Callpath) => {
    let r = rows.get(p.key);
    if (!r) rows.set(p.key, (r = { key: p.key, fn: p.fn, folded: p.folded, frames: p.frames, a_bytes: 0, b_bytes: 0, delta_bytes: 0, a_count: 0, b_count: 0, delta_count: 0 }));
    return r;
  };
  for (const p of a.paths) {
    const r = row(p);
    r.a_bytes += p.est_bytes;
    r.a_count += p.est_count;
  }
  for (const p of b.paths) {
    const r = row(p);
    // b's names win (same key = same code)
    r.folded = p.folded;
    r.frames = p.frames;
    r.b_bytes += p.est_bytes;
    r.b_count += p.est_count;
  }
  const out = [...rows.values()];
  for (const r of out) {
    r.delta_bytes = r.b_bytes - r.a_bytes;
    r.delta_count = r.b_count - r.a_count;
  }
  out.sort((x, y) => y.delta_bytes - x.delta_bytes || y.b_bytes - x.b_bytes);
  return { a: { id: a.id, time: a.time, worker: a.worker }, b: { id: b.id, time: b.time, worker: b.worker }, rows: out };
}

/** Differential folded stacks (FlameGraph difffolded.pl format): "stack <a_bytes> <b_bytes>". */
export function diffFolded(d: CallpathDiff): string {
  const lines = d.rows.map((r) => `${r.folded} ${Math.round(r.a_bytes)} ${Math.round(r.b_bytes)}`);
  return lines.length ? lines.join("\n") + "\n" : "";
}

export interface CallpathListEntry {
  id: number;
  time: number;
  paths: number;
  est_bytes_total: number;
}

/** Stored fetches, in the control plane's SQLite database (own table). */
export class CallpathStore {
  constructor(private readonly db: Database.Database, private readonly keep = KEEP) {
    db.exec(`CREATE TABLE IF NOT EXISTS callpaths (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      worker TEXT NOT NULL,
      time REAL NOT NULL,
      paths INTEGER NOT NULL,
      est_bytes_total REAL NOT NULL,
      body BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS callpaths_worker ON callpaths(worker, id);`);
  }

  /** Stores one fetch (id and time assigned here) and prunes the worker's older ones beyond `keep`. */
  add(c: Omit<Callpaths, "id">): Callpaths {
    const body = zlib.gzipSync(JSON.stringify(c), { level: 3 });
    const info = this.db
      .prepare("INSERT INTO callpaths (worker, time, paths, est_bytes_total, body) VALUES (?, ?, ?, ?, ?)")
      .run(c.worker, c.time, c.paths.length, c.est_bytes_total, body);
    const id = Number(info.lastInsertRowid);
    this.db
      .prepare("DELETE FROM callpaths WHERE worker = ? AND id NOT IN (SELECT id FROM callpaths WHERE worker = ? ORDER BY id DESC LIMIT ?)")
      .run(c.worker, c.worker, this.keep);
    return { ...c, id };
  }

  get(id: number): Callpaths | undefined {
    const r = this.db.prepare("SELECT id, body FROM callpaths WHERE id = ?").get(id) as { id: number; body: Buffer } | undefined;
    if (!r) return undefined;
    return { ...(JSON.parse(zlib.gunzipSync(r.body).toString("utf8")) as Omit<Callpaths, "id">), id: r.id };
  }

  list(worker: string): CallpathListEntry[] {
    return this.db
      .prepare("SELECT id, time, paths, est_bytes_total FROM callpaths WHERE worker = ? ORDER BY id DESC")
      .all(worker) as CallpathListEntry[];
  }
}
