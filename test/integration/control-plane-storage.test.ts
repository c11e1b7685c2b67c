/**
 * Storage guarantees with a real SQLite file: ack only after commit, nothing
 * acked is lost across a restart, worker lifecycle, and an unwritable database.
 */
import Database from "better-sqlite3";
import WebSocket from "ws";
import { startCP, SimAgent, getJson, tempDir } from "../harness/control-plane";
import * as path from "path";
import { buildSnapshot, identityOf } from "../fixtures/snapshots";
import { Store } from "../../control-plane/src/store";
import { summarize } from "../../control-plane/src/summary";
import { suspectsFor, MAX_POINTS } from "../../control-plane/src/analysis";

function rowsOf(db: string): { worker_key: string; seq: number; rss_bytes: number }[] {
  const d = new Database(db, { readonly: true });
  try {
    return d.prepare("SELECT w.key AS worker_key, s.seq, s.rss_bytes FROM snapshots s JOIN workers w ON w.id = s.worker ORDER BY s.id").all() as never;
  } finally {
    d.close();
  }
}

class Console {
  readonly ws: WebSocket;
  readonly msgs: any[] = [];
  private waiters: { pred: (m: any) => boolean; res: (m: any) => void }[] = [];
  constructor(url: string) {
    this.ws = new WebSocket(`${url}/live`);
    this.ws.on("message", (d) => {
      const m = JSON.parse(d.toString());
      this.msgs.push(m);
      for (const w of [...this.waiters]) if (w.pred(m)) { this.waiters.splice(this.waiters.indexOf(w), 1); w.res(m); }
    });
  }
  open(): Promise<void> {
    return new Promise((r) => this.ws.once("open", () => r()));
  }
  waitFor(pred: (m: any) => boolean): Promise<any> {
    const m = this.msgs.find(pred);
    if (m) return Promise.resolve(m);
    return new Promise((res) => this.waiters.push({ pred, res }));
  }
}

describe("control plane storage", () => {
  test("ack comes after commit, and everything acked survives a restart on the same db file", async () => {
    const dir = tempDir();
    let cp = await startCP({ dir });
    const id = identityOf({ pid: 6001 });
    const a = await SimAgent.connect(cp.ws);
    await a.hello(id);
    const key = `${id.instance}/6001/${id.worker_start}`;
    for (let seq = 1; seq <= 20; seq++) {
      const ack = await a.push(seq, buildSnapshot({ pid: 6001, seq, rss_bytes: 1_000_000 + seq }));
      expect(ack).toEqual({ type: "ack", seq });
      // the ack means committed: a separate connection sees the row right now
      expect(rowsOf(cp.db).filter((r) => r.worker_key === key).map((r) => r.seq)).toContain(seq);
    }
    await a.close();
    await cp.stop();

    cp = await startCP({ dir });
    const rows = rowsOf(cp.db).filter((r) => r.worker_key === key);
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(rows.map((r) => r.rss_bytes)).toEqual(Array.from({ length: 20 }, (_, i) => 1_000_001 + i));
    const ws = (await getJson(`${cp.base}/api/workers`)).body;
    expect(ws).toHaveLength(1);
    expect(ws[0]).toMatchObject({ key, state: "gone", snapshots: 20, pid: 6001 });
    // the agent resends what it thinks is unacked: acked again, stored once
    const b = await SimAgent.connect(cp.ws);
    await b.hello(id);
    expect(await b.push(20, buildSnapshot({ pid: 6001, seq: 20 }))).toEqual({ type: "ack", seq: 20 });
    expect(await b.push(21, buildSnapshot({ pid: 6001, seq: 21 }))).toEqual({ type: "ack", seq: 21 });
    expect(rowsOf(cp.db).filter((r) => r.worker_key === key)).toHaveLength(21);
    const snap = (await getJson(`${cp.base}/api/workers/${encodeURIComponent(key)}/snapshots?limit=1`)).body;
    const full = (await getJson(`${cp.base}/api/snapshots/${snap[0].id}`)).body;
    expect(full.snapshot).toEqual(buildSnapshot({ pid: 6001, seq: 21 }));
    await b.close();
    await cp.stop();
  });

  test("a worker whose socket closes is gone (history kept); a new pid is a new series of the same instance", async () => {
    const cp = await startCP();
    const con = new Console(cp.ws);
    await con.open();
    const old = identityOf({ pid: 7001, worker_id: 0 });
    const a = await SimAgent.connect(cp.ws);
    const wa = await a.hello(old);
    await a.push(1, buildSnapshot({ pid: 7001, seq: 1 }));
    await con.waitFor((m) => m.type === "snapshot" && m.worker.key === wa.worker_key);
    expect((await getJson(`${cp.base}/api/workers`)).body[0].state).toBe("live");
    a.ws.terminate(); // a crash: no close frame
    const gone = await con.waitFor((m) => m.type === "worker_gone");
    expect(gone.worker).toMatchObject({ key: wa.worker_key, state: "gone", snapshots: 1 });

    const fresh = identityOf({ pid: 7002, worker_id: 0, worker_start: 1764150500.5, generation: 1 });
    const b = await SimAgent.connect(cp.ws);
    const wb = await b.hello(fresh);
    expect(wb.worker_key).not.toBe(wa.worker_key);
    await b.push(1, buildSnapshot({ pid: 7002, seq: 1, worker_start: 1764150500.5, generation: 1 }));
    const list = (await getJson(`${cp.base}/api/workers?instance=${encodeURIComponent(old.instance)}`)).body;
    expect(list.map((w: any) => [w.key, w.state, w.snapshots])).toEqual([
      [wa.worker_key, "gone", 1],
      [wb.worker_key, "live", 1],
    ]);
    expect(list[1].previous_key).toBe(wa.worker_key);
    expect(list[1].instance).toBe(list[0].instance);
    // history of the gone worker is still there
    expect((await getJson(`${cp.base}/api/workers/${encodeURIComponent(wa.worker_key)}/snapshots`)).body).toHaveLength(1);
    con.ws.close();
    await b.close();
    await cp.stop();
  });

  test("an unwritable database: live data keeps flowing, /api/health reports it, nothing is acked until it is stored", async () => {
    const cp = await startCP({ writer: { maxBatch: 1000, backlogMax: 100, backlogMaxBytes: 64 << 20, retryMs: 200 } });
    const con = new Console(cp.ws);
    await con.open();
    const id = identityOf({ pid: 8001 });
    const a = await SimAgent.connect(cp.ws);
    await a.hello(id);
    expect(await a.push(1, buildSnapshot({ pid: 8001, seq: 1 }))).toEqual({ type: "ack", seq: 1 });
    // "disk full": SQLite may not grow the file beyond its current size
    const pages = cp.cp.store.db.pragma("page_count", { simple: true }) as number;
    cp.cp.store.db.pragma(`max_page_count = ${pages}`);
    const acks: any[] = [];
    for (let seq = 2; seq <= 6; seq++) a.send({ type: "snapshot", seq, snapshot: buildSnapshot({ pid: 8001, seq, rss_bytes: 2_000_000 + seq }) });
    // consoles still get every snapshot live
    const live6 = await con.waitFor((m) => m.type === "snapshot" && m.summary.seq === 6);
    expect(live6.summary.metrics["system.rss_bytes"]).toBe(2_000_006);
    const h = (await getJson(`${cp.base}/api/health`)).body;
    expect(h.ok).toBe(false);
    expect(h.store.ok).toBe(false);
    expect(h.store.error).toMatch(/SQLITE_FULL/);
    expect(h.store.backlog).toBe(5);
    expect(cp.logs.some((l) => /error store: cannot write .*SQLITE_FULL.*retrying/.test(l))).toBe(true);
    // the snapshot is readable from the backlog even though it is not stored yet
    expect((await getJson(`${cp.base}/api/snapshots/${live6.snapshot_id}`)).body).toMatchObject({ stored: false, seq: 6 });
    expect(rowsOf(cp.db).map((r) => r.seq)).toEqual([1]);
    // room again: the backlog is written, then acked, in order
    cp.cp.store.db.pragma("max_page_count = 1073741823");
    for (let i = 0; i < 5; i++) acks.push(await a.next());
    expect(acks).toEqual([2, 3, 4, 5, 6].map((seq) => ({ type: "ack", seq })));
    expect(rowsOf(cp.db).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect((await getJson(`${cp.base}/api/health`)).body.store.ok).toBe(true);
    con.ws.close();
    await a.close();
    await cp.stop();
  });

  test("retention: after full resolution one snapshot per worker and minute is kept; after retention none", async () => {
    const cp = await startCP();
    const a = await SimAgent.connect(cp.ws);
    await a.hello(identityOf({ pid: 9001 }));
    // 30 snapshots 10 s apart (agent time) = 5 minutes: 5 one-minute buckets (t0 is minute-aligned)
    const t0 = 1764150000;
    for (let seq = 1; seq <= 30; seq++) await a.push(seq, buildSnapshot({ pid: 9001, seq, time: t0 + (seq - 1) * 10 }));
    await a.close();
    const now = Date.now() / 1000;
    expect(cp.cp.store.prune(now, 24, 30)).toEqual({ thinned: 0, deleted: 0 });
    // a day later: thinned to the last snapshot of each minute
    expect(cp.cp.store.prune(now + 25 * 3600, 24, 30)).toEqual({ thinned: 25, deleted: 0 });
    expect(rowsOf(cp.db).map((r) => r.seq)).toEqual([6, 12, 18, 24, 30]);
    const w = (await getJson(`${cp.base}/api/workers`)).body[0];
    expect(w.snapshots).toBe(5);
    // beyond retention: gone, and so is the worker
    expect(cp.cp.store.prune(now + 31 * 86400, 24, 30)).toEqual({ thinned: 0, deleted: 5 });
    expect((await getJson(`${cp.base}/api/workers`)).body).toEqual([]);
    await cp.stop();
  });

  test("suspects read a bounded sample of a busy worker's window and still get the fed slope", () => {
    const dir = tempDir();
    const store = new Store(path.join(dir, "s.db"));
    const w = store.helloWorker(identityOf({ pid: 9100 }), Date.now() / 1000);
    const t0 = Date.now() / 1000 - 600;
    // 3000 snapshots in 10 minutes (5/s): luajit grows exactly 100 KB per second
    const items = [];
    for (let i = 0; i < 3000; i++) {
      const sum = summarize(buildSnapshot({ pid: 9100, seq: i + 1, time: t0 + i * 0.2, gc_bytes: 1_000_000 + Math.round(i * 0.2 * 102400) }));
      items.push({ id: store.allocateId(), worker: w.id, seq: i + 1, time: t0 + i * 0.2, received: Date.now(), deep: false, rss_bytes: 1, metrics: sum.metrics, unrooted: {}, full: Buffer.alloc(0) });
    }
    store.insertBatch(items);
    const sample = store.windowSampled(w.id, t0, t0 + 600, MAX_POINTS);
    expect(sample.length).toBe(MAX_POINTS);
    expect(sample[0].seq).toBe(1);
    expect(sample[sample.length - 1].seq).toBe(3000);
    const s = suspectsFor(store, {}, 600);
    expect(s.map((x) => x.metric)).toEqual(["luajit.gc_bytes"]);
    expect(s[0].growth_bytes_per_min).toBeCloseTo(102400 * 60, -2);
    store.close();
  });
});
