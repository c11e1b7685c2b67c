import { Nginx } from "../harness/nginx";
import { WsPeer, pushingNginx } from "../harness/ws-peer";

describe("push: worker lifecycle (nginx -s reload, a worker crash)", () => {
  const peer = new WsPeer({ token: "t" });
  let ngx: Nginx;

  pushingNginx(peer, (n) => (ngx = n));

  test("old workers' clients close, new workers connect with a higher generation", async () => {
    const oldPids = ngx.workerPids();
    await peer.waitFor("snapshots from the first workers", () => oldPids.every((p) => peer.unique(p).length >= 1));
    const oldGen = peer.hellos.find((h) => h.agent.pid === oldPids[0])!.agent.generation;
    expect(peer.hellos.filter((h) => oldPids.includes(h.agent.pid)).every((h) => h.agent.generation === oldGen)).toBe(true);

    await ngx.reload();
    const newPids = ngx.workerPids();
    expect(newPids.some((p) => oldPids.includes(p))).toBe(false);

    await peer.waitFor("new workers' snapshots", () => newPids.every((p) => peer.unique(p).length >= 2));
    for (const p of newPids) {
      const h = peer.hellos.find((x) => x.agent.pid === p)!;
      expect(h.agent.generation).toBeGreaterThan(oldGen);
      for (const r of peer.unique(p)) expect((r.msg.snapshot as any).generation).toBe(h.agent.generation);
    }
    // the old workers' connections were closed by the agents (not cut by the peer), promptly
    const oldConns = peer.conns.filter((c) => c.hello && oldPids.includes(c.hello.agent.pid));
    await peer.waitFor("old connections closed", () => oldConns.every((c) => c.closed));
    for (const c of oldConns) {
      expect(c.closedBy).toBe("agent");
      expect(c.closeCode).toBe(1001);
    }
    // and the old workers are gone (the push did not hold them open)
    expect(peer.live().map((c) => c.hello!.agent.pid).sort()).toEqual(newPids);
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
    // a clean close: no writes on a socket torn down under the client
    expect(ngx.errors().filter((l) => /memdiag push|closed socket/.test(l))).toEqual([]);
  });

  test("a worker killed with SIGKILL: its connection drops, the respawned worker connects as a new worker of the same generation", async () => {
    const pids = ngx.workerPids();
    const victim = pids[0];
    const gen = peer.hellos.find((h) => h.agent.pid === victim)!.agent.generation;
    process.kill(victim, "SIGKILL");
    const conn = peer.conns.find((c) => c.hello?.agent.pid === victim && !c.closed)!;
    await peer.waitFor("victim's connection closed", () => conn.closed);
    const fresh = await peer.waitFor("respawned worker's hello", () => peer.hellos.find((h) => !pids.includes(h.agent.pid) && h.agent.generation === gen));
    expect(ngx.workerPids()).toContain(fresh.agent.pid);
    await peer.waitFor("its snapshots", () => peer.unique(fresh.agent.pid).length >= 2);
    expect(peer.unique(fresh.agent.pid)[0].msg.seq).toBe(1);
    // the other worker carried on on its connection
    const other = pids[1];
    const before = peer.unique(other).length;
    await peer.waitFor("the other worker's next snapshot", () => peer.unique(other).length > before);
    expect(peer.live().map((c) => c.hello!.agent.pid).sort()).toEqual(ngx.workerPids());
  });
});
