import { Nginx, httpGet, sleep } from "../harness/nginx";
import { WsPeer, Received } from "../harness/ws-peer";
import { freePort } from "../harness/ports";

/**
 * The control plane goes away for several collection intervals and comes back
 * on the same port: the agent keeps collecting, keeps serving requests, queues
 * (bounded), reconnects with backoff and drains the queue in seq order.
 */
async function outage(queueMax: number | undefined, intervals: number) {
  const peer = new WsPeer({ token: "t" });
  await peer.start(await freePort());
  const agent: any = { control_plane_url: peer.url, token: "t", interval_s: 1 };
  if (queueMax !== undefined) agent.queue_max_snapshots = queueMax;
  const ngx = new Nginx({ workers: 2, agent });
  await ngx.start();
  try {
    const pids = ngx.workerPids();
    await peer.waitFor("2 snapshots per worker", () => pids.every((p) => peer.unique(p).length >= 2));
    // stop between two collections, not right after a send (an ack lost in flight would be re-sent: fine, but noisier)
    const last = Math.max(...peer.received.map((r) => (r as any).at ?? 0));
    void last;
    await sleep(400);
    const before = new Map(pids.map((p) => [p, Math.max(...peer.unique(p).map((r) => r.msg.seq))]));
    await peer.stop();

    // while it is down: requests keep succeeding
    const lat: number[] = [];
    let ok = 0;
    const published = new Map<number, number>();
    const queues = new Map<number, { count: number; bytes: number; max_count: number; max_bytes: number; connected: boolean }>();
    while (true) {
      for (let i = 0; i < 50; i++) {
        const t0 = process.hrtime.bigint();
        const r = await httpGet(ngx.appPort, "/ok");
        lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
        if (r.status === 200) ok++;
      }
      const snaps = await ngx.snapshots();
      for (const s of snaps) published.set(s.pid, s.seq);
      // the push state of whichever worker answers: its queue while the control plane is away
      for (let k = 0; k < 4; k++) {
        const st = JSON.parse((await ngx.memdiag("?push=1")).body);
        const q = st.queue;
        const m = queues.get(st.pid) ?? { count: 0, bytes: 0, max_count: q.max_count, max_bytes: q.max_bytes, connected: false };
        queues.set(st.pid, { ...m, count: Math.max(m.count, q.count), bytes: Math.max(m.bytes, q.bytes), connected: m.connected || st.connected });
      }
      if (pids.every((p) => (published.get(p) ?? 0) >= before.get(p)! + intervals)) break;
      await sleep(200);
    }
    const rssDown = (await ngx.snapshots()).map((s) => s.system.rss_bytes);

    await peer.start(peer.port);
    // everything published before the restart must be accounted for: received, or counted as dropped
    await peer.waitFor("queue drained", () => pids.every((p) => peer.unique(p).some((r) => r.msg.seq >= published.get(p)!)), 40000);
    return { peer, ngx, pids, before, published, ok, lat, rssDown, queues };
  } catch (e) {
    await ngx.stop();
    await peer.stop();
    throw e;
  }
}

function bySeq(rs: Received[]): Received[] {
  return [...rs].sort((a, b) => a.msg.seq - b.msg.seq);
}

describe("push: control plane down for several intervals, queue large enough", () => {
  let o: Awaited<ReturnType<typeof outage>>;
  beforeAll(async () => {
    o = await outage(undefined, 6);
  });
  afterAll(async () => {
    await o?.ngx.stop();
    await o?.peer.stop();
  });

  test("requests kept succeeding while it was down", () => {
    expect(o.ok).toBe(o.lat.length);
    const sorted = [...o.lat].sort((a, b) => a - b);
    console.log(`requests during outage: ${o.lat.length}, p50 ${sorted[Math.floor(sorted.length / 2)].toFixed(2)} ms, max ${sorted[sorted.length - 1].toFixed(2)} ms`);
  });

  test("after reconnect every snapshot arrives, in seq order, none dropped", () => {
    for (const p of o.pids) {
      const rs = o.peer.unique(p);
      const seqs = rs.map((r) => r.msg.seq);
      // arrival order is seq order
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      // contiguous from 1 through at least what was published during the outage
      const max = seqs[seqs.length - 1];
      expect(max).toBeGreaterThanOrEqual(o.published.get(p)!);
      expect(seqs).toEqual(Array.from({ length: max }, (_, i) => i + 1));
      expect(rs.every((r) => !r.msg.dropped)).toBe(true);
      expect(rs.every((r) => r.valid)).toBe(true);
    }
  });

  test("while it was down the snapshots waited in the queue (never connected)", () => {
    expect(o.queues.size).toBeGreaterThan(0);
    for (const q of o.queues.values()) {
      expect(q.connected).toBe(false);
      expect(q.count).toBeGreaterThanOrEqual(3);
      expect(q.count).toBeLessThanOrEqual(q.max_count);
      expect(q.bytes).toBeLessThanOrEqual(q.max_bytes);
    }
  });

  test("each worker reconnected once, on a new connection", () => {
    for (const p of o.pids) {
      const conns = new Set(o.peer.unique(p).map((r) => r.conn));
      expect(conns.size).toBe(2);
    }
    expect(o.peer.live().length).toBe(2);
  });
});

describe("push: control plane down longer than the queue holds", () => {
  const Q = 3;
  let o: Awaited<ReturnType<typeof outage>>;
  beforeAll(async () => {
    o = await outage(Q, 8);
  });
  afterAll(async () => {
    await o?.ngx.stop();
    await o?.peer.stop();
  });

  test("the newest snapshots that fit arrive in order; `dropped` counts exactly the ones that did not", () => {
    for (const p of o.pids) {
      const rs = bySeq(o.peer.unique(p));
      const seqs = rs.map((r) => r.msg.seq);
      const arrival = o.peer.unique(p).map((r) => r.msg.seq);
      expect(arrival).toEqual(seqs);
      expect(seqs[0]).toBe(1);
      let droppedTotal = 0;
      let gaps = 0;
      for (let i = 1; i < rs.length; i++) {
        const gap = seqs[i] - seqs[i - 1] - 1;
        if (gap > 0) {
          gaps++;
          expect(rs[i].msg.dropped).toBe(gap);
        } else {
          expect(rs[i].msg.dropped ?? 0).toBe(0);
        }
        droppedTotal += rs[i].msg.dropped ?? 0;
      }
      expect(gaps).toBe(1);
      expect(droppedTotal).toBeGreaterThanOrEqual(8 - Q);
      // the Q snapshots queued at the moment of reconnect all arrived
      const firstAfter = rs.findIndex((r) => (r.msg.dropped ?? 0) > 0);
      const burst = rs.slice(firstAfter, firstAfter + Q).map((r) => r.msg.seq);
      expect(burst).toEqual(Array.from({ length: Q }, (_, i) => seqs[firstAfter] + i));
    }
  });

  test("the queue never held more than its cap", () => {
    expect(o.queues.size).toBeGreaterThan(0);
    for (const q of o.queues.values()) {
      expect(q.max_count).toBe(Q);
      expect(q.count).toBe(Q);
    }
  });

  test("one warning per worker about the full queue, one notice with the count when it drains, no crash", () => {
    const log = o.ngx.errorLog();
    for (const p of o.pids) {
      const lines = log.split("\n").filter((l) => l.includes(`${p}#`) && /\[warn\].*queue full/.test(l));
      expect(lines.length).toBe(1);
      expect(lines[0]).toMatch(/\[warn\].*queue full \(3 snapshots/);
      const ends = log.split("\n").filter((l) => l.includes(`${p}#`) && /\[notice\].*the queue drains after/.test(l));
      expect(ends).toHaveLength(1);
      // the count the agent logs is the count its frames announced to the control plane
      const announced = o.peer.unique(p).reduce((s, r) => s + (r.msg.dropped ?? 0), 0);
      expect(ends[0]).toMatch(new RegExp(`after ${announced} dropped snapshots over`));
    }
    expect(log).not.toMatch(/exited on signal/);
    expect(o.ngx.workerPids()).toEqual(o.pids);
  });
});

describe("push: control plane accepts TCP but never answers (hung process)", () => {
  const net = require("net") as typeof import("net");
  let port = 0;
  const socks = new Set<import("net").Socket>();
  let hole: import("net").Server;
  let ngx: Nginx;
  const peer = new WsPeer({ token: "t" });

  beforeAll(async () => {
    port = await freePort();
    hole = net.createServer((s) => {
      socks.add(s);
      s.on("error", () => undefined);
    });
    await new Promise<void>((r) => hole.listen(port, "127.0.0.1", () => r()));
    ngx = new Nginx({ workers: 2, agent: { control_plane_url: `ws://127.0.0.1:${port}/ingest`, token: "t", interval_s: 1 } });
    await ngx.start();
  });
  afterAll(async () => {
    await ngx?.stop();
    for (const s of socks) s.destroy();
    await new Promise<void>((r) => (hole.listening ? hole.close(() => r()) : r()));
    await peer.stop();
  });

  test("the handshake times out with a clear warning; requests and local snapshots are unaffected", async () => {
    const pids = ngx.workerPids();
    await new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + 30000;
      const t = setInterval(() => {
        const lines = ngx.errorLog().split("\n").filter((l) => /memdiag push: cannot reach control plane/.test(l) && /timeout/.test(l));
        if (pids.every((p) => lines.some((l) => l.includes(`${p}#`)))) {
          clearInterval(t);
          resolve();
        } else if (Date.now() > deadline) {
          clearInterval(t);
          reject(new Error("no handshake-timeout warning"));
        }
      }, 200);
    });
    for (let i = 0; i < 100; i++) expect((await httpGet(ngx.appPort, "/ok")).status).toBe(200);
    const snaps = await ngx.snapshots();
    expect(snaps.map((s) => s.pid)).toEqual(pids);
  });

  test("when a working control plane takes the port, the queue drains from seq 1", async () => {
    for (const s of socks) s.destroy();
    await new Promise<void>((r) => hole.close(() => r()));
    await peer.start(port);
    const pids = ngx.workerPids();
    const published = new Map((await ngx.snapshots()).map((s) => [s.pid, s.seq]));
    await peer.waitFor("queue drained", () => pids.every((p) => peer.unique(p).some((r) => r.msg.seq >= published.get(p)!)), 60000);
    for (const p of pids) {
      const seqs = peer.unique(p).map((r) => r.msg.seq);
      expect(seqs.slice(0, published.get(p)!)).toEqual(Array.from({ length: published.get(p)! }, (_, i) => i + 1));
    }
  });
});
