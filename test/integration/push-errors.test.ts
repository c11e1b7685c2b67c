import { Nginx, httpGet } from "../harness/nginx";
import { WsPeer, pushingNginx } from "../harness/ws-peer";

describe("push: the control plane rejects a snapshot (error reply with seq)", () => {
  const peer = new WsPeer({ token: "t", reject: (m) => (m.seq === 3 ? "storage refused it" : undefined) });
  let ngx: Nginx;
  pushingNginx(peer, (n) => (ngx = n));

  test("the rejected one is not sent again, is logged with the reason, and the stream goes on", async () => {
    const pids = ngx.workerPids();
    await peer.waitFor("seq 5 from each worker", () => pids.every((p) => peer.unique(p).some((r) => r.msg.seq >= 5)));
    for (const p of pids) {
      const threes = peer.received.filter((r) => r.pid === p && r.msg.seq === 3);
      expect(threes.length).toBe(1);
      const seqs = peer.unique(p).map((r) => r.msg.seq);
      expect(seqs.slice(0, 5)).toEqual([1, 2, 3, 4, 5]);
      // a rejection is not a drop: nothing announces it as dropped
      expect(peer.unique(p).every((r) => !r.msg.dropped)).toBe(true);
    }
    const lines = ngx.errors().filter((l) => /memdiag push: control plane rejected snapshot 3: storage refused it/.test(l));
    expect(lines.length).toBe(2);
    for (const p of pids) {
      const st = await statusOf(ngx, p);
      expect(st.rejected).toBe(1);
    }
  });
});

/** /_memdiag?push=1 of one worker (asks until that worker answers). */
async function statusOf(ngx: Nginx, pid: number): Promise<any> {
  for (let i = 0; i < 200; i++) {
    const st = JSON.parse((await ngx.memdiag("?push=1")).body);
    if (st.pid === pid) return st;
  }
  throw new Error(`worker ${pid} never answered ?push=1`);
}

describe("push: a control plane that never acks", () => {
  const Q = 6;
  const peer = new WsPeer({ token: "t", noAck: true });
  let ngx: Nginx;
  pushingNginx(peer, (n) => (ngx = n), { agent: { queue_max_snapshots: Q } });

  test("unacked snapshots stay queued up to the cap, then the oldest go and are announced as dropped", async () => {
    const pids = ngx.workerPids();
    await peer.waitFor("Q + 3 snapshots per worker", () => pids.every((p) => peer.unique(p).length >= Q + 3), 40000);
    for (const p of pids) {
      const st = await statusOf(ngx, p);
      expect(st.connected).toBe(true);
      expect(st.acked).toBe(0);
      expect(st.queue.count).toBeLessThanOrEqual(Q);
      expect(st.queue.dropped_total).toBeGreaterThanOrEqual(1);
      // each was sent once on this connection; the drops of sent-but-unacked ones are announced on a later frame
      const rs = peer.unique(p);
      expect(peer.received.filter((r) => r.pid === p).length).toBe(rs.length);
      const announced = rs.reduce((a, r) => a + (r.msg.dropped ?? 0), 0);
      expect(announced).toBeLessThanOrEqual(st.queue.dropped_total);
      expect(announced + st.queue.dropped_pending).toBe(st.queue.dropped_total);
    }
    expect((await httpGet(ngx.appPort, "/ok")).status).toBe(200);
  });
});

describe("push: the control plane cannot store for now (error 'resend later')", () => {
  const tries = new Map<number, number>();
  const peer = new WsPeer({
    token: "t",
    reject: (m, pid) => {
      if (m.seq !== 3) return undefined;
      const n = (tries.get(pid) ?? 0) + 1;
      tries.set(pid, n);
      // the real control plane's wording when its storage backlog is full
      return n <= 2 ? "storage unavailable and backlog full; not stored, resend later" : undefined;
    },
  });
  let ngx: Nginx;
  pushingNginx(peer, (n) => (ngx = n));

  test("the snapshot is kept and sent again until stored; nothing dropped, a warning not an error", async () => {
    const pids = ngx.workerPids();
    await peer.waitFor("seq 3 stored by each worker", () => pids.every((p) => peer.received.some((r) => r.pid === p && r.msg.seq === 3 && !r.error)), 30000);
    for (const p of pids) {
      expect(tries.get(p)).toBe(3);
      const st = await statusOf(ngx, p);
      expect(st.rejected).toBe(0);
      expect(st.queue.dropped_total).toBe(0);
    }
    expect(ngx.errors().filter((l) => /memdiag push/.test(l))).toEqual([]);
    expect(ngx.errorLog()).toMatch(/\[warn\].*could not store snapshot 3 for now: storage unavailable/);
  });
});

describe("push: an idle connection (long interval)", () => {
  const peer = new WsPeer({ token: "t" });
  let ngx: Nginx;
  pushingNginx(peer, (n) => (ngx = n), { workers: 1, agent: { interval_s: 60 } });

  test("is kept alive with pings (every 20 s when nothing else is sent) and not reconnected", async () => {
    const pid = ngx.workerPids()[0];
    await peer.waitFor("first snapshot", () => peer.unique(pid).length >= 1);
    const conn = peer.live().find((c) => c.hello!.agent.pid === pid)!;
    await peer.waitFor("a keepalive ping", () => conn.pings >= 1, 40000);
    expect(conn.closed).toBe(false);
    expect(peer.conns.filter((c) => c.hello?.agent.pid === pid).length).toBe(1);
  });
});
