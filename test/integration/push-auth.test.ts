import { Nginx, httpGet } from "../harness/nginx";
import { WsPeer } from "../harness/ws-peer";
import { freePort } from "../harness/ports";

describe("push: wrong token", () => {
  const peer = new WsPeer({ token: "right" });
  let ngx: Nginx;

  beforeAll(async () => {
    await peer.start(await freePort());
    ngx = new Nginx({ workers: 2, agent: { control_plane_url: peer.url, token: "wrong", interval_s: 1 } });
    await ngx.start();
  });
  afterAll(async () => {
    await ngx?.stop();
    await peer.stop();
  });

  test("rejected with 4401; the agent logs a clear warning once per worker (no [error]) and retries with growing delays", async () => {
    const pids = ngx.workerPids();
    // three rejected attempts per worker: with backoff 0.25–0.5, 0.5–1, 1–2 s between them
    await peer.waitFor("3 rejected hellos per worker", () => pids.every((p) => peer.rejected.filter((r) => r.pid === p).length >= 3), 30000);
    expect(peer.received.length).toBe(0);
    // backoff is applied: attempts 1→3 are at least 0.25 + 0.5 s apart (the minimum of the jittered delays)
    for (const p of pids) {
      const at = peer.rejected.filter((r) => r.pid === p).map((r) => r.at);
      expect(at[2] - at[0]).toBeGreaterThanOrEqual(700);
    }
    expect(peer.rejected.every((r) => r.token === "wrong")).toBe(true);
    const closes = peer.conns.filter((c) => c.closed).map((c) => c.peerCode);
    expect(closes.length).toBeGreaterThanOrEqual(6);
    expect(new Set(closes)).toEqual(new Set([4401]));
    expect(ngx.errors()).toEqual([]);
    const lines = ngx.errorLog().split("\n").filter((l) => /\[warn\].*memdiag push/.test(l));
    // the same failure is logged once per worker, not per attempt
    for (const p of pids) {
      const mine = lines.filter((l) => l.includes(` ${p}#`) && /rejected the token/.test(l));
      expect(mine).toHaveLength(1);
      expect(mine[0]).toMatch(/rejected the token \(close 4401 unauthorized.*check the token/);
    }
  });

  test("no crash: same workers, requests succeed, snapshots still published locally", async () => {
    const pids = ngx.workerPids();
    expect((await httpGet(ngx.appPort, "/ok")).status).toBe(200);
    const snaps = await ngx.snapshots();
    expect(snaps.map((s) => s.pid)).toEqual(pids);
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
  });

  test("once the control plane accepts the token, the agent connects on its next attempt and sends the queue", async () => {
    peer.opts.token = "wrong";
    const pids = ngx.workerPids();
    await peer.waitFor("snapshots from both workers", () => pids.every((p) => peer.unique(p).length >= 2), 40000);
    for (const p of pids) {
      const seqs = peer.unique(p).map((r) => r.msg.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      expect(seqs[0]).toBe(1); // nothing lost while rejected: seq 1 was still queued
    }
  });
});
